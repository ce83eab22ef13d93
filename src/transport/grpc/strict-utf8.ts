import { configureTextEncoding } from "@bufbuild/protobuf/wire";

/**
 * Protobuf string fields must be valid UTF-8. The generated decoders read strings leniently by
 * default (invalid bytes become U+FFFD), which would silently store a different value than the
 * caller sent. Decoding strictly makes such a request fail in the decoder, before any handler runs,
 * so nothing is stored. Imported for its effect by call.ts (every handler goes through it).
 */
const encoder = new TextEncoder();
const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

configureTextEncoding({
  encodeUtf8: (text: string) => encoder.encode(text),
  decodeUtf8: (bytes: Uint8Array) => strict.decode(bytes),
  checkUtf8: (text: string) => {
    try {
      encodeURIComponent(text);
      return true;
    } catch {
      return false;
    }
  },
});
