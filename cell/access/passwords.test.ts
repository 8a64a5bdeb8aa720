import { expect, test } from 'vitest';
import { hashPassword, verifyPassword } from './passwords.js';

test('a password verifies against its own hash only, and every hash is salted', async () => {
  const stored = await hashPassword('correct horse battery');
  expect(stored).toMatch(/^scrypt\$32768\$8\$1\$[\w-]+\$[\w-]+$/);
  expect(stored).not.toContain('correct horse');
  await expect(verifyPassword('correct horse battery', stored)).resolves.toBe(true);
  await expect(verifyPassword('correct horse batterY', stored)).resolves.toBe(false);
  expect(await hashPassword('correct horse battery')).not.toBe(stored);
});

test('a malformed stored hash never verifies', async () => {
  for (const stored of ['', 'plain', 'md5$1$2$3$abc$def', 'scrypt$x$8$1$abc$def', 'scrypt$32768$8$1$abc$']) {
    await expect(verifyPassword('anything at all', stored)).resolves.toBe(false);
  }
});
