import { describe, expect, it } from 'vitest';
import { AttachmentsConfig } from '../settings.js';
import { contentDisposition } from './content-disposition.js';
import { sniffMediaType } from './sniff.js';
import { checkUpload } from './upload-policy.js';
import { UploadRateLimiter } from './upload-rate-limiter.js';

/** The smallest PNG: its signature and an IHDR chunk are what file-type looks at. */
export const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000001000000010806000000' + '1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082',
  'hex',
);

describe('sniffMediaType', () => {
  it('judges by the bytes alone', async () => {
    expect(await sniffMediaType(PNG)).toBe('image/png');
    expect(await sniffMediaType(Buffer.from('%PDF-1.4\n%âãÏÓ\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n', 'latin1'))).toBe('application/pdf');
    expect(await sniffMediaType(Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff', 'latin1'))).toBe('application/x-msdownload');
  });

  it('calls valid UTF-8 without NUL plain text, and anything else unknown', async () => {
    expect(await sniffMediaType(Buffer.from('Grüße, 你好 👋\n'))).toBe('text/plain');
    expect(await sniffMediaType(Buffer.from([0x68, 0x00, 0x69]))).toBe('application/octet-stream');
    expect(await sniffMediaType(Buffer.from([0xc3, 0x28, 0x41]))).toBe('application/octet-stream');
  });
});

describe('checkUpload', () => {
  const config = AttachmentsConfig.parse({ maxBytes: 10 });
  it('refuses what is too large, of a type not accepted, or empty', () => {
    expect(() => checkUpload(config, 11, 'image/png')).toThrow(expect.objectContaining({ code: 'ATTACHMENT_TOO_LARGE' }));
    expect(() => checkUpload(config, 5, 'application/x-msdownload')).toThrow(expect.objectContaining({ code: 'ATTACHMENT_TYPE_REFUSED' }));
    expect(() => checkUpload(config, 0, 'text/plain')).toThrow(expect.objectContaining({ code: 'BAD_FRAME' }));
    expect(() => checkUpload(config, 10, 'image/png')).not.toThrow();
  });

  it('defaults to 10 MiB of images, PDF and plain text, and is strict', () => {
    expect(AttachmentsConfig.parse({})).toEqual({
      maxBytes: 10 * 1024 * 1024,
      types: ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'application/pdf', 'text/plain'],
    });
    expect(AttachmentsConfig.safeParse({ maxByte: 5 }).success).toBe(false);
    expect(AttachmentsConfig.safeParse({ types: ['png'] }).success).toBe(false);
  });
});

describe('contentDisposition', () => {
  it('shows images inline and downloads anything else', () => {
    expect(contentDisposition('cat.png', 'image/png')).toBe(`inline; filename="cat.png"; filename*=UTF-8''cat.png`);
    expect(contentDisposition('a.pdf', 'application/pdf')).toMatch(/^attachment; /);
  });

  it('quotes any name safely', () => {
    const header = contentDisposition('evil".txt\r\nset-cookie: x=1; ü', 'text/plain');
    expect(header).not.toMatch(/[\r\n]/);
    expect(header).toBe(`attachment; filename="evil_.txt__set-cookie: x=1; _"; filename*=UTF-8''evil%22.txt%0D%0Aset-cookie%3A%20x%3D1%3B%20%C3%BC`);
  });
});

describe('UploadRateLimiter', () => {
  it('limits each uploader on its own, and forgets the least recently seen beyond its bound', () => {
    const limiter = new UploadRateLimiter({ ratePerSecond: 1, burst: 2, maxTracked: 2 });
    expect(limiter.take('a', 0)).toBe(0);
    expect(limiter.take('a', 0)).toBe(0);
    expect(limiter.take('a', 0)).toBe(1000);
    expect(limiter.take('b', 0)).toBe(0);
    expect(limiter.take('a', 1000)).toBe(0);
    limiter.take('c', 1000);
    // 'b' was seen least recently: forgotten, it has a full burst again.
    expect(limiter.take('b', 1000)).toBe(0);
    expect(limiter.take('b', 1000)).toBe(0);
  });
});
