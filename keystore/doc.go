// Package keystore seals tenant secrets (gateway tokens, provider API keys, channel credentials)
// with AES-256-GCM under per-tenant keys derived by HKDF-SHA256 from a versioned master key.
//
// Invariants: a ciphertext opens only for the tenant, record and purpose it was sealed for
// (they are the GCM additional data) and only with the master key version named in its header;
// anything else fails with ErrOpen and returns no plaintext. Secrets never print: Secret
// redacts itself in fmt, slog and JSON.
package keystore
