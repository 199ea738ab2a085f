package policies

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"time"
)

// NewDecisionID returns a fresh decision id: 32 hex digits, the first 12 the time in
// milliseconds (ids sort by time, and a support case's id says when it was decided), the
// other 80 bits random. The random bits come from the runtime's ChaCha8 generator, seeded
// by the operating system per thread: no lock, no system call, and an id says nothing
// about the next one, so ids can be shown to clients without being guessable.
func NewDecisionID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	binary.BigEndian.PutUint64(b[8:], rand.Uint64())
	binary.BigEndian.PutUint16(b[6:8], uint16(rand.Uint32()))
	return hex.EncodeToString(b[:])
}
