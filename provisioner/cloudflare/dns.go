package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"
)

// Record is the DNS record of a gateway's hostname.
type Record struct {
	ID      string
	Name    string
	Content string // the CNAME target, <tunnel id>.cfargotunnel.com
	Proxied bool
}

// EnsureDNS makes sure the gateway's hostname is a proxied CNAME to its tunnel
// (<tunnel id>.cfargotunnel.com), marked with the driver's comment. The tunnel must
// exist (ErrNotFound). A record the driver made that points elsewhere, or is not proxied,
// is repaired; any other record on the hostname, or a hostname routed to another tunnel
// (code 1033), is a *DriftError and left alone.
func (d *Driver) EnsureDNS(ctx context.Context, gatewayID string) (Record, error) {
	name, host, err := d.names(gatewayID)
	if err != nil {
		return Record{}, err
	}
	t, err := d.lookupTunnel(ctx, name)
	if err != nil {
		return Record{}, fmt.Errorf("cloudflare: ensure dns: %w", err)
	}
	target := tunnelTarget(t.ID)
	recs, err := d.recordsAt(ctx, host)
	if err != nil {
		return Record{}, err
	}
	if len(recs) > 0 {
		return d.reconcileRecord(ctx, gatewayID, host, target, recs)
	}
	var created *dns.RecordResponse
	err = d.call(ctx, create, func(ctx context.Context) (err error) {
		p := dns.RecordNewParams{}
		p.ZoneID.Value, p.ZoneID.Present = d.cfg.ZoneID, true
		p.Body = cnameParam(gatewayID, host, target)
		created, err = d.records.New(ctx, p)
		return err
	})
	switch {
	case err == nil:
		d.log.LogAttrs(ctx, slog.LevelInfo, "cloudflare: created dns record", slog.String("gateway", gatewayID),
			slog.String("hostname", host), slog.String("record", created.ID))
		return Record{ID: created.ID, Name: created.Name, Content: created.Content, Proxied: created.Proxied}, nil
	case hasCode(err, codeHostnameOnTunnel):
		return Record{}, &DriftError{Findings: []Finding{{Resource: "dns", Name: host, Want: target, Got: "routed to another tunnel (code 1033)"}}}
	case !hasCode(err, codeRecordConflict) && !hasCode(err, codeRecordExists) && !errors.Is(err, ErrUnknownResult):
		return Record{}, fmt.Errorf("cloudflare: create dns record %q: %w", host, err)
	}
	// Taken, or perhaps created: what is there now decides.
	recs, lerr := d.recordsAt(ctx, host)
	switch {
	case lerr != nil:
		return Record{}, lerr
	case len(recs) > 0:
		return d.reconcileRecord(ctx, gatewayID, host, target, recs)
	case errors.Is(err, ErrUnknownResult):
		return Record{}, fmt.Errorf("cloudflare: create dns record %q: %w", host, err)
	}
	return Record{}, fmt.Errorf("%w: dns record %q: the API says it exists, the zone lists none: %w", ErrNameTaken, host, err)
}

// cnameParam is the record the driver keeps for a gateway.
func cnameParam(gatewayID, host, target string) dns.CNAMERecordParam {
	var r dns.CNAMERecordParam
	r.Name.Value, r.Name.Present = host, true
	r.Type.Value, r.Type.Present = dns.CNAMERecordTypeCNAME, true
	r.Content.Value, r.Content.Present = target, true
	r.Proxied.Value, r.Proxied.Present = true, true
	r.TTL.Value, r.TTL.Present = dns.TTL1, true
	r.Comment.Value, r.Comment.Present = recordComment(gatewayID), true
	return r
}

// reconcileRecord decides about the records found on host: the driver's CNAME to target
// is adopted; the driver's record that differs is overwritten; anything else is drift.
func (d *Driver) reconcileRecord(ctx context.Context, gatewayID, host, target string, recs []dns.RecordResponse) (Record, error) {
	r := recs[0]
	ours := r.Comment == recordComment(gatewayID)
	if len(recs) > 1 || r.Type != dns.RecordResponseTypeCNAME || (r.Content != target && !ours) {
		got := string(r.Type) + " " + r.Content
		if len(recs) > 1 {
			got = fmt.Sprintf("%d records", len(recs))
		}
		return Record{}, &DriftError{Findings: []Finding{{Resource: "dns", Name: host, Want: "CNAME " + target, Got: got}}}
	}
	if r.Content == target && r.Proxied && ours {
		return Record{ID: r.ID, Name: r.Name, Content: r.Content, Proxied: true}, nil
	}
	// Ours, or pointing at our tunnel: bring it to what the driver makes.
	var updated *dns.RecordResponse
	err := d.call(ctx, idempotent, func(ctx context.Context) (err error) {
		p := dns.RecordUpdateParams{}
		p.ZoneID.Value, p.ZoneID.Present = d.cfg.ZoneID, true
		p.Body = cnameParam(gatewayID, host, target)
		updated, err = d.records.Update(ctx, r.ID, p)
		return err
	})
	if err != nil {
		return Record{}, fmt.Errorf("cloudflare: repair dns record %q: %w", host, err)
	}
	d.log.LogAttrs(ctx, slog.LevelWarn, "cloudflare: repaired dns record", slog.String("gateway", gatewayID),
		slog.String("hostname", host), slog.String("record", r.ID), slog.String("was", r.Content), slog.Bool("was_proxied", r.Proxied))
	return Record{ID: updated.ID, Name: updated.Name, Content: updated.Content, Proxied: updated.Proxied}, nil
}

// recordsAt lists every record named host, of any type.
func (d *Driver) recordsAt(ctx context.Context, host string) ([]dns.RecordResponse, error) {
	all, err := listAll(ctx, d, func(ctx context.Context, n, size int64) (*pagination.V4PagePaginationArray[dns.RecordResponse], error) {
		p := dns.RecordListParams{}
		p.ZoneID.Value, p.ZoneID.Present = d.cfg.ZoneID, true
		var name dns.RecordListParamsName
		name.Exact.Value, name.Exact.Present = host, true
		p.Name.Value, p.Name.Present = name, true
		p.Page.Value, p.Page.Present = float64(n), true
		p.PerPage.Value, p.PerPage.Present = float64(size), true
		return d.records.List(ctx, p)
	})
	if err != nil {
		return nil, fmt.Errorf("cloudflare: list dns records %q: %w", host, err)
	}
	var out []dns.RecordResponse
	for _, r := range all {
		if r.Name == host {
			out = append(out, r)
		}
	}
	return out, nil
}
