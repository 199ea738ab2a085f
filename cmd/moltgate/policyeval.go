package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/moltgate/moltgate/policies"
)

const policyEvalUsage = "usage: moltgate policy eval --input FILE [--dir DIR] [--data FILE] [--explain off|notes|fails|full]"

// policyEval decides one policy input with DIR's policy set (the embedded one without it)
// and the gateways, platform admins and tenant keys of --data, and prints the decision as JSON
// (policies.Evaluation), with OPA's explanation on request.
func policyEval(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	input := fs.String("input", "", "the policy input, JSON")
	dir := fs.String("dir", "", "the policy set (default: the embedded one)")
	dataFile := fs.String("data", "", `{"gateways": [...], "platform_admins": [...], "tenant_keys": {...}}`)
	explain := fs.String("explain", policies.ExplainOff, "off, notes, fails or full")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *input == "" {
		return usageError{policyEvalUsage}
	}
	f, err := os.Open(*input)
	if err != nil {
		return fmt.Errorf("policy eval: %w", err)
	}
	defer f.Close()
	// An audit event holding an input is larger than the input: DecodeInput bounds what is left.
	raw, err := io.ReadAll(io.LimitReader(f, 4*policies.MaxInputBytes))
	if err != nil {
		return fmt.Errorf("policy eval: %w", err)
	}
	evIn, erased, ok, err := eventInput(raw)
	if err != nil {
		return fmt.Errorf("policy eval: %s: %w", *input, err)
	} else if ok {
		raw = evIn
	}
	in, err := policies.DecodeInput(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("policy eval: %s: %w", *input, err)
	}
	e, err := policies.New(ctx, policies.Config{Dir: *dir}, nil, nil)
	if err != nil {
		return err
	}
	if *dataFile != "" {
		if err := loadEvalData(ctx, e, *dataFile); err != nil {
			return fmt.Errorf("policy eval: %s: %w", *dataFile, err)
		}
	}
	ev, err := e.Evaluate(ctx, in, *explain)
	if err != nil {
		return fmt.Errorf("policy eval: %w", err)
	}
	// What the event's masking removed is not in the input decided: say so beside the
	// decision, which may then differ from the one recorded.
	out, err := json.MarshalIndent(struct {
		policies.Evaluation
		InputErased []string `json:"input_erased,omitempty"`
	}{ev, erased}, "", "  ")
	if err != nil {
		return fmt.Errorf("policy eval: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// loadEvalData reads the --data file strictly and puts it into e's data.
func loadEvalData(ctx context.Context, e *policies.Engine, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d policies.ReplayData
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return d.Apply(ctx, e)
}
