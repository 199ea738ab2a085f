package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/moltgate/moltgate/audit"
)

// eventInput returns the policy input held by raw when raw is an audit event (it has the
// event's schema and type), so that a line of `moltgate audit query` can be given to policy
// eval as it is, and the fields erased from that input before it was written (OPA mask
// paths); ok is false when raw is not an event. An event that records only part of its
// input (a refusal) is an error saying where the whole input is.
func eventInput(raw []byte) (input []byte, erased []string, ok bool, err error) {
	var ev struct {
		Schema  int             `json:"schema"`
		Type    string          `json:"type"`
		Input   json.RawMessage `json:"input"`
		Erased  []string        `json:"erased"`
		Details struct {
			Input  string `json:"input"`
			Erased string `json:"erased"`
		} `json:"details"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.Schema == 0 || ev.Type == "" {
		return nil, nil, false, nil
	}
	switch {
	case ev.Type == audit.TypePolicyShadow && ev.Details.Input != "":
		if ev.Details.Erased != "" {
			erased = strings.Split(ev.Details.Erased, ",")
		}
		return []byte(ev.Details.Input), erased, true, nil
	case ev.Type == audit.TypePolicyDecision && len(ev.Input) > 0:
		return ev.Input, ev.Erased, true, nil
	}
	return nil, nil, true, fmt.Errorf("a %s audit event, which does not hold a whole policy input: give the input of a "+
		"%s or %s event (a refusal records only its subject, gateway, action and method: replay it with `policy test`, "+
		"testdata/replay)", ev.Type, audit.TypePolicyShadow, audit.TypePolicyDecision)
}
