package main

import (
	"fmt"
	"net"

	"github.com/redis/go-redis/v9"

	"github.com/moltgate/moltgate/store"
)

// validate reports the problems of a sentinel configuration at key (store.redis.sentinel,
// audit.redis.sentinel), each naming its key. Replicas is the caller's to check.
func (s *RedisSentinelConfig) validate(key string) []error {
	var errs []error
	if s.MasterName == "" {
		errs = append(errs, fmt.Errorf("%s.master_name: required", key))
	}
	if len(s.Addresses) == 0 {
		errs = append(errs, fmt.Errorf("%s.addresses: required: at least one sentinel host:port", key))
	}
	for i, a := range s.Addresses {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s.addresses[%d]: %q: want host:port", key, i, a))
		}
	}
	return errs
}

// validate reports the problems of audit.redis, each naming its key.
func (r *AuditRedisConfig) validate() []error {
	var errs []error
	switch {
	case r.Addr != "" && r.Sentinel != nil:
		errs = append(errs, fmt.Errorf("audit.redis: give either addr or sentinel, not both"))
	case r.Sentinel != nil:
		errs = append(errs, r.Sentinel.validate("audit.redis.sentinel")...)
		if r.Sentinel.Replicas != 0 {
			// The spool keeps every event until it is archived and sends again what a
			// failover lost, so the stream's writes need not wait for a replica Redis.
			errs = append(errs, fmt.Errorf("audit.redis.sentinel.replicas: %d: not used by the audit stream (leave it out)", r.Sentinel.Replicas))
		}
	case r.Addr == "":
		errs = append(errs, fmt.Errorf("audit.redis.addr: required (or audit.redis.sentinel)"))
	}
	for key, ref := range map[string]*SecretRef{"audit.redis.password": r.Password, "audit.redis.sentinel.password": r.sentinelPassword()} {
		if ref != nil {
			if err := ref.validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", key, err))
			}
		}
	}
	return errs
}

func (r *AuditRedisConfig) sentinelPassword() *SecretRef {
	if r.Sentinel == nil {
		return nil
	}
	return r.Sentinel.Password
}

// client connects to the audit stream's Redis: its address, or the master its sentinels name,
// followed across failovers so that events do not wait in the spool for the old master.
func (r *AuditRedisConfig) client(env func(string) string) (*redis.Client, error) {
	rc := store.RedisConfig{Addr: r.Addr, DB: r.DB}
	if r.Password != nil {
		pw, err := r.Password.resolve(env)
		if err != nil {
			return nil, fmt.Errorf("audit.redis.password: %w", err)
		}
		rc.Password = string(pw)
	}
	if s := r.Sentinel; s != nil {
		rc.Sentinel = &store.SentinelConfig{MasterName: s.MasterName, Addrs: s.Addresses}
		if s.Password != nil {
			pw, err := s.Password.resolve(env)
			if err != nil {
				return nil, fmt.Errorf("audit.redis.sentinel.password: %w", err)
			}
			rc.Sentinel.Password = string(pw)
		}
	}
	return store.NewRedisClient(rc), nil
}
