/**
 * The child process of the kill -9 test in level-store.test.ts. It writes keys through a
 * LevelStore from several concurrent writers and prints each key on a line of its own once its
 * write() has resolved, that is once the store has acknowledged it as durable. On Linux, writes
 * to a pipe are synchronous, so a printed line has left the process before the next write.
 *
 * Usage: node --import tsx durable-writer.ts <directory> <writers> <maxKeys>
 */
import { LevelStore } from '../level-store.js';

const [directory, writersArgument, maxKeysArgument] = process.argv.slice(2);
if (directory === undefined || writersArgument === undefined || maxKeysArgument === undefined) {
  throw new Error('usage: durable-writer.ts <directory> <writers> <maxKeys>');
}
const writers = Number(writersArgument);
const maxKeys = Number(maxKeysArgument);

const store = new LevelStore({ directory });
await store.open();

let nextKey = 0;

async function writeKeys(): Promise<void> {
  while (nextKey < maxKeys) {
    const key = `durable/${String(nextKey).padStart(8, '0')}`;
    nextKey += 1;
    await store.write([{ type: 'put', key, value: key }]);
    process.stdout.write(`${key}\n`);
  }
}

await Promise.all(Array.from({ length: writers }, writeKeys));
await store.close();
