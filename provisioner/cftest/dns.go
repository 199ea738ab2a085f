package cftest

import (
	"net/http"
	"strings"
	"time"
)

type record struct {
	seq        uint64
	ID         string
	Name       string
	Type       string
	Content    string
	Proxied    bool
	TTL        float64
	Comment    string
	CreatedOn  time.Time
	ModifiedOn time.Time
}

type recordJSON struct {
	ID         string    `json:"id"`
	ZoneID     string    `json:"zone_id"`
	ZoneName   string    `json:"zone_name"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Content    string    `json:"content"`
	Proxiable  bool      `json:"proxiable"`
	Proxied    bool      `json:"proxied"`
	TTL        float64   `json:"ttl"`
	Comment    *string   `json:"comment"`
	Settings   struct{}  `json:"settings"`
	Meta       struct{}  `json:"meta"`
	Tags       []string  `json:"tags"`
	CreatedOn  time.Time `json:"created_on"`
	ModifiedOn time.Time `json:"modified_on"`
}

func (s *Server) recordJSON(rec *record) recordJSON {
	j := recordJSON{
		ID: rec.ID, ZoneID: s.cfg.ZoneID, ZoneName: s.cfg.Zone, Name: rec.Name, Type: rec.Type,
		Content: rec.Content, Proxiable: proxiable(rec.Type), Proxied: rec.Proxied, TTL: rec.TTL,
		Tags: []string{}, CreatedOn: rec.CreatedOn, ModifiedOn: rec.ModifiedOn,
	}
	if rec.Comment != "" {
		c := rec.Comment
		j.Comment = &c
	}
	return j
}

func proxiable(typ string) bool { return typ == "A" || typ == "AAAA" || typ == "CNAME" }

// recordBody is what a create or an overwrite sends.
type recordBody struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Content string   `json:"content"`
	Proxied *bool    `json:"proxied"`
	TTL     *float64 `json:"ttl"`
	Comment *string  `json:"comment"`
}

// listRecords filters by name (name or name.exact), type, content (content or
// content.exact) and proxied.
func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := strings.ToLower(first(q.Get("name.exact"), q.Get("name")))
	content := first(q.Get("content.exact"), q.Get("content"))
	var out []recordJSON
	for _, rec := range sortedByCreation(s.records, func(r *record) uint64 { return r.seq }) {
		switch {
		case name != "" && rec.Name != name,
			q.Has("type") && rec.Type != q.Get("type"),
			content != "" && rec.Content != content,
			q.Has("proxied") && (q.Get("proxied") == "true") != rec.Proxied:
			continue
		}
		out = append(out, s.recordJSON(rec))
	}
	writePage(w, r, s, out)
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkRecord validates body and its coexistence with the zone's other records (but self):
// a CNAME stands alone on its name (400, code 81053), and an identical record is 400, code
// 81057. Validation errors use code 9000, the fake's own. Callers hold s.mu.
func (s *Server) checkRecord(w http.ResponseWriter, body *recordBody, self string) bool {
	body.Name = strings.ToLower(strings.TrimSuffix(body.Name, "."))
	body.Type = strings.ToUpper(body.Type)
	zone := s.cfg.Zone
	switch {
	case body.Type == "" || body.Content == "":
		writeError(w, http.StatusBadRequest, 9000, "DNS Validation Error: type and content are required")
		return false
	case body.Name != zone && !strings.HasSuffix(body.Name, "."+zone), !hostnameRE.MatchString(body.Name):
		writeError(w, http.StatusBadRequest, 9000, "DNS Validation Error: name is not in the zone")
		return false
	case body.Proxied != nil && *body.Proxied && !proxiable(body.Type):
		writeError(w, http.StatusBadRequest, 9000, "DNS Validation Error: record type is not proxiable")
		return false
	case body.TTL != nil && *body.TTL != 1 && (*body.TTL < 60 || *body.TTL > 86400):
		writeError(w, http.StatusBadRequest, 9000, "DNS Validation Error: ttl must be 1 or between 60 and 86400")
		return false
	}
	for _, rec := range s.records {
		if rec.ID == self || rec.Name != body.Name {
			continue
		}
		if rec.Type == body.Type && rec.Content == body.Content {
			writeError(w, http.StatusBadRequest, CodeRecordExists, "The record already exists.")
			return false
		}
		if rec.Type == "CNAME" || body.Type == "CNAME" {
			writeError(w, http.StatusBadRequest, CodeRecordConflict, "An A, AAAA, or CNAME record with that host already exists.")
			return false
		}
	}
	return true
}

func (rec *record) set(body recordBody) {
	rec.Name, rec.Type, rec.Content = body.Name, body.Type, body.Content
	rec.Proxied, rec.TTL, rec.Comment = false, 1, ""
	if body.Proxied != nil {
		rec.Proxied = *body.Proxied
	}
	if body.TTL != nil {
		rec.TTL = *body.TTL
	}
	if body.Comment != nil {
		rec.Comment = *body.Comment
	}
}

func (s *Server) createRecord(w http.ResponseWriter, r *http.Request) {
	var body recordBody
	if !decode(w, r, &body) || !s.checkRecord(w, &body, "") {
		return
	}
	rec := &record{ID: s.hexID(), seq: s.seq, CreatedOn: s.now(), ModifiedOn: s.now()}
	rec.set(body)
	s.records[rec.ID] = rec
	writeResult(w, http.StatusOK, s.recordJSON(rec))
}

func (s *Server) findRecord(w http.ResponseWriter, r *http.Request) (*record, bool) {
	rec, ok := s.records[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, 81044, "Record does not exist.")
	}
	return rec, ok
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	if rec, ok := s.findRecord(w, r); ok {
		writeResult(w, http.StatusOK, s.recordJSON(rec))
	}
}

// updateRecord overwrites a record: fields the body leaves out take their defaults.
func (s *Server) updateRecord(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.findRecord(w, r)
	if !ok {
		return
	}
	var body recordBody
	if !decode(w, r, &body) || !s.checkRecord(w, &body, rec.ID) {
		return
	}
	rec.set(body)
	rec.ModifiedOn = s.now()
	writeResult(w, http.StatusOK, s.recordJSON(rec))
}

func (s *Server) deleteRecord(w http.ResponseWriter, r *http.Request) {
	if rec, ok := s.findRecord(w, r); ok {
		delete(s.records, rec.ID)
		writeResult(w, http.StatusOK, map[string]string{"id": rec.ID})
	}
}
