package admin

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
)

var errBadBody = errors.New("admin: body must be one JSON object with known fields, at most 64 KiB")

// maxDepth bounds the nesting of an admin request body; none needs more than three levels.
const maxDepth = 16

// decode reads one strict JSON object into v: unknown fields, trailing data and oversized
// bodies are refused, so a typo cannot silently drop a setting. Keys are matched exactly and
// each may appear once in its object: encoding/json would match {"ID": …} to the field id
// and let the last of two "id"s win, so a body could read one way to a reviewer, a proxy or
// a log, and another way here.
func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(data) > maxBody {
		return errBadBody
	}
	if err := checkKeys(json.NewDecoder(bytes.NewReader(data)), reflect.TypeOf(v), 0); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errBadBody
	}
	if dec.More() {
		return errBadBody
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errBadBody
	}
	return nil
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkKeys reads one JSON value from dec as Go type t would take it (nil: any) and refuses
// a duplicate key in any object, and in an object decoded into a struct, a key that is not
// exactly one of its fields' JSON names.
func checkKeys(dec *json.Decoder, t reflect.Type, depth int) error {
	if depth > maxDepth {
		return errBadBody
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) ||
		t.Kind() == reflect.Interface) {
		t = nil // decoded by its own rules: keys are only checked for duplicates
	}
	tok, err := dec.Token()
	if err != nil {
		return errBadBody
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		} else if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return errBadBody
			}
			key, _ := tok.(string)
			if seen[key] {
				return fmt.Errorf("%w: duplicate key %q", errBadBody, clip(key, 64))
			}
			seen[key] = true
			ft := elem
			if fields != nil {
				var ok bool
				if ft, ok = fields[key]; !ok {
					return fmt.Errorf("%w: unknown field %q (names are case-sensitive)", errBadBody, clip(key, 64))
				}
			}
			if err := checkKeys(dec, ft, depth+1); err != nil {
				return err
			}
		}
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := checkKeys(dec, elem, depth+1); err != nil {
				return err
			}
		}
	default:
		return nil // a scalar
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return errBadBody
	}
	return nil
}

// jsonFields maps the JSON names of struct t's fields, as encoding/json names them, to their
// types. Request bodies are flat structs: an embedded struct's fields would not be promoted
// here, so a body naming them is refused, never read in a way encoding/json would not.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case !f.IsExported() || tag == "-":
			continue
		case name == "":
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// clip shortens s to at most n bytes, for echoing the caller's input in an answer.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
