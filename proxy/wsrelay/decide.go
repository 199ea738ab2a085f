package wsrelay

import (
	"context"
	"time"

	"github.com/moltgate/moltgate/policies"
	"github.com/moltgate/moltgate/registry"
)

// decisionTTL bounds how long a socket reuses a decision. Everything a decision reads is
// fixed for the socket (subject, gateway, client address) or checked on every message (the
// gateway's registry entry, the engine's generation, which moves with the policy set and
// every datum, and the relay's recheck generation), so within those the result can only
// change with the clock: a policy that reads time.now_ns sees it at most this late.
const decisionTTL = time.Second

// maxCachedDecisions bounds the cache of one socket: a client inventing method names gets
// each one decided, and cannot make the relay remember them.
const maxCachedDecisions = 64

type decisionKey struct{ method, tool, skill string }

// decisionCache holds one socket's decisions while nothing they depend on has changed.
type decisionCache struct {
	entry *registry.Entry // registry entries are replaced, never modified, on every change
	data  uint64          // the engine's generation
	gen   uint64
	until time.Time
	m     map[decisionKey]policies.Decision
}

// decide decides request f, which names tool or skill (see frame.names), on this socket: the
// policy engine's decision for {input of the upgrade, action ws.call, ws {method, tool,
// skill}}, reused while the
// gateway's entry, the engine's generation and the relay's generation are those it was made
// under, for at most decisionTTL. Errors are never cached.
func (c *conn) decide(ctx context.Context, f *frame, tool, skill string) (policies.Decision, error) {
	// A reused decision is a decision too: none is made on data the engine cannot vouch for.
	if err := c.rl.deps.Policy.Fresh(); err != nil {
		d := policies.PolicyErrorDecision()
		d.ID, d.Revision = policies.NewDecisionID(), c.rl.deps.Policy.Revision()
		return d, err
	}
	key := decisionKey{f.method, tool, skill}
	channels, unreadable := f.channels()
	if channels != nil || unreadable {
		// A configuration write is decided on its content, which the key does not hold.
		in := c.s.Input
		in.Protocol, in.Action = policies.ProtocolWS, "ws.call"
		in.WS = &policies.WSMessage{Method: f.method, Tool: tool, Skill: skill, Channels: channels, ConfigUnreadable: unreadable}
		return c.rl.deps.Policy.Decide(ctx, &in)
	}
	entry, ok := c.rl.deps.Gateways.Lookup(c.s.Entry.ID)
	data, gen, now := c.rl.deps.Policy.Generation(), c.rl.gen.Load(), time.Now()
	dc := &c.decisions
	if ok && (dc.entry != entry || dc.data != data || dc.gen != gen || now.After(dc.until)) {
		clear(dc.m)
		dc.entry, dc.data, dc.gen, dc.until = entry, data, gen, now.Add(decisionTTL)
	}
	if d, hit := dc.m[key]; ok && hit {
		c.rl.m.cacheHit.Inc()
		// Reused, but a decision of its own: its refusal is quoted and audited by its id.
		d.ID, d.Reused = policies.NewDecisionID(), true
		if c.rl.deps.Policy.ShadowRevision() != "" {
			// A candidate set must see what it would change for socket traffic as it is.
			in := c.messageInput(key)
			c.rl.deps.Policy.Shadow(&in, d)
		}
		return d, nil
	}
	in := c.messageInput(key)
	d, err := c.rl.deps.Policy.Decide(ctx, &in)
	c.rl.m.cacheMiss.Inc()
	if err == nil && ok && len(dc.m) < maxCachedDecisions {
		if dc.m == nil {
			dc.m = make(map[decisionKey]policies.Decision, 8)
		}
		dc.m[key] = d
	}
	return d, err
}

// messageInput is the policy input of a message on this socket naming key.
func (c *conn) messageInput(key decisionKey) policies.Input {
	in := c.s.Input
	in.Protocol, in.Action = policies.ProtocolWS, "ws.call"
	in.WS = &policies.WSMessage{Method: key.method, Tool: key.tool, Skill: key.skill}
	return in
}
