/**
 * Types of the `xsalsa20` package (the stream cipher of libp2p's private networks, also what
 * `@libp2p/pnet` uses), which ships none.
 */
declare module 'xsalsa20' {
  interface XSalsa20 {
    /** XORs `input` with the next bytes of the key stream. */
    update(input: Uint8Array, output?: Uint8Array): Uint8Array;
    /** Releases the instance's slot in the shared WebAssembly memory; the instance is unusable after. */
    finalize(): void;
  }
  /** A key stream from a 24-byte nonce and a 32-byte key. */
  function xsalsa20(nonce: Uint8Array, key: Uint8Array): XSalsa20;
  export = xsalsa20;
}
