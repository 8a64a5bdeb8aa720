// The cell console (/app/console.html): an operator types the admin token (kept in this tab's
// sessionStorage only) and watches and steers the cell that served the page (docs/web.md).
import { CellConsole } from './cell-console.js';

new CellConsole(window.location.origin, window.sessionStorage);
