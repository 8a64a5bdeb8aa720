/**
 * The file holding a cell's libp2p key (its peer id), loaded or created once, safely.
 */
import { chmod, link, mkdir, open, readFile, rm, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';

/**
 * Loads the Ed25519 key at `keyPath`, or creates it (file mode 0600, parent folders 0700) when
 * the file does not exist, so a cell keeps its peer id across restarts. The file holds libp2p's
 * protobuf encoding of the private key. Creation writes a temporary file and links it into place,
 * so a crash never leaves a half-written key and two processes racing agree on one key.
 * A file with looser permissions is tightened to 0600; a file that does not decode is an error,
 * never silently replaced (that would change the cell's identity).
 */
export async function loadOrCreatePeerKey(keyPath: string): Promise<PrivateKey> {
  const existing = await readKeyFile(keyPath);
  if (existing !== undefined) return existing;
  await mkdir(dirname(keyPath), { recursive: true, mode: 0o700 });
  const key = await generateKeyPair('Ed25519');
  const temporaryPath = `${keyPath}.${process.pid}.tmp`;
  await rm(temporaryPath, { force: true }); // left by a crashed process that had the same pid
  const file = await open(temporaryPath, 'wx', 0o600);
  try {
    await file.writeFile(privateKeyToProtobuf(key));
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await link(temporaryPath, keyPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await unlink(temporaryPath);
  }
  // Another process may have won the race: whatever is at keyPath now is the identity.
  const stored = await readKeyFile(keyPath);
  if (stored === undefined) throw new Error(`peer key file ${keyPath} vanished while it was being created`);
  return stored;
}

async function readKeyFile(keyPath: string): Promise<PrivateKey | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(keyPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const { mode } = await stat(keyPath);
  if ((mode & 0o077) !== 0) await chmod(keyPath, 0o600);
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (error) {
    throw new Error(`peer key file ${keyPath} is not a libp2p private key`, { cause: error });
  }
  if (key.type !== 'Ed25519') throw new Error(`peer key file ${keyPath} holds a ${key.type} key, not Ed25519`);
  return key;
}
