package main

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration is decoded by walking the YAML document against Config's fields rather
// than by yaml.Decoder: a decoder stops at the first problem, so a typo would hide a bad
// CIDR and a file with five problems would report one. Walking reports every unknown or
// repeated key, every value of the wrong type and every inline secret, each by its key, and
// keeps what did decode for Validate to check as well.

// configProblem is one problem of a configuration file: the key it is about ("" for the
// file as a whole), what is wrong, and where.
type configProblem struct {
	key  string
	msg  string
	line int // 0: not from the file
}

func (p configProblem) Error() string {
	var b strings.Builder
	if p.key != "" {
		b.WriteString(p.key)
		b.WriteString(": ")
	}
	b.WriteString(p.msg)
	if p.line > 0 {
		fmt.Fprintf(&b, " (line %d)", p.line)
	}
	return b.String()
}

// configDecoder walks one document. lines holds the line of every key it saw (paths as
// Validate names them: "clerk.issuer", "trusted_proxies[1]"); failed the keys whose value
// did not decode, so that Validate's view of their zero value is not reported again.
type configDecoder struct {
	problems []configProblem
	lines    map[string]int
	failed   map[string]bool
}

var (
	secretRefType = reflect.TypeFor[SecretRef]()
	durationType  = reflect.TypeFor[time.Duration]()
)

// decodeConfig decodes data into cfg, reporting every problem it finds; a YAML syntax error
// ends decoding, as nothing after it can be read reliably.
func decodeConfig(data []byte, cfg *Config) *configDecoder {
	d := &configDecoder{lines: map[string]int{}, failed: map[string]bool{}}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.problems = append(d.problems, configProblem{msg: strings.TrimPrefix(err.Error(), "yaml: ")})
		}
		return d
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		d.problems = append(d.problems, configProblem{msg: "a second YAML document: give one configuration per file", line: extra.Line})
	}
	if len(doc.Content) == 1 {
		d.value("", doc.Content[0], reflect.ValueOf(cfg).Elem())
	}
	return d
}

func (d *configDecoder) bad(key string, n *yaml.Node, format string, args ...any) {
	d.problems = append(d.problems, configProblem{key: key, msg: fmt.Sprintf(format, args...), line: n.Line})
	d.failed[key] = true
}

// value decodes n into v, the field at key.
func (d *configDecoder) value(key string, n *yaml.Node, v reflect.Value) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // absent: the default
	}
	switch {
	case v.Type() == secretRefType && n.Kind != yaml.MappingNode:
		// The value is not repeated: it is a secret.
		d.bad(key, n, "a secret is given by reference, {file: PATH} or {env: NAME}; an inline value is refused (and not repeated here)")
		return
	case v.Type() == durationType || v.Kind() != reflect.Struct && v.Kind() != reflect.Pointer &&
		v.Kind() != reflect.Slice && v.Kind() != reflect.Map:
		d.scalar(key, n, v)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// Set only when the value is of the right kind: a section given as a scalar, or an
		// inline secret, stays unset rather than be checked again as an empty one.
		nv := reflect.New(v.Type().Elem())
		d.value(key, n, nv.Elem())
		if !d.failed[key] {
			v.Set(nv)
		}
	case reflect.Struct:
		d.mapping(key, n, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.bad(key, n, "%s: want a list, such as [a, b]", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			k := fmt.Sprintf("%s[%d]", key, i)
			d.lines[k] = item.Line
			d.value(k, item, s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.bad(key, n, "%s: want a mapping, such as {name: value}", describe(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := key + "." + n.Content[i].Value
			if _, dup := d.lines[k]; dup {
				d.bad(k, n.Content[i], "given twice (first at line %d)", d.lines[k])
				continue
			}
			d.lines[k] = n.Content[i].Line
			elem := reflect.New(v.Type().Elem()).Elem()
			d.value(k, n.Content[i+1], elem)
			m.SetMapIndex(reflect.ValueOf(n.Content[i].Value).Convert(v.Type().Key()), elem)
		}
		v.Set(m)
	}
}

// mapping decodes the keys of n into the fields of struct v, the section at key.
func (d *configDecoder) mapping(key string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.bad(key, n, "%s: want a section of keys (%s)", describe(n), strings.Join(fieldNames(v.Type()), ", "))
		return
	}
	prefix := ""
	if key != "" {
		prefix = key + "."
	}
	names := fieldNames(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		k := prefix + kn.Value
		if first, dup := d.lines[k]; dup {
			d.bad(k, kn, "given twice (first at line %d)", first)
			continue
		}
		d.lines[k] = kn.Line
		f, ok := fieldByName(v, kn.Value)
		if !ok {
			d.bad(k, kn, "unknown key%s", suggest(kn.Value, names))
			continue
		}
		d.value(k, vn, f)
	}
}

// scalar decodes one value.
func (d *configDecoder) scalar(key string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.bad(key, n, "%s: want %s", describe(n), want(v.Type()))
		return
	}
	tmp := reflect.New(v.Type())
	if err := n.Decode(tmp.Interface()); err != nil {
		d.bad(key, n, "%s: want %s", describe(n), want(v.Type()))
		return
	}
	v.Set(tmp.Elem())
}

// want says what a value of type t is written as.
func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration with its unit, such as 250ms, 5s or 1m30s"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	}
	return "a single value, such as a string"
}

// describe names what n is, quoting a scalar (clipped): the problem's message shows what
// was written.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a section of keys"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return strconv.Quote(v)
}

// fieldNames lists the YAML keys of struct type t.
func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func fieldByName(v reflect.Value, name string) (reflect.Value, bool) {
	for i := range v.NumField() {
		if yamlName(v.Type().Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// suggest names the valid key closest to an unknown one, when one is close enough to be the
// one meant; in a small section with none close it lists them all.
func suggest(key string, valid []string) string {
	best, dist := "", len(key)+1
	for _, v := range valid {
		if d := editDistance(strings.ToLower(key), v); d < dist {
			best, dist = v, d
		}
	}
	switch {
	case best != "" && (dist <= 2 || dist <= len(key)/3):
		return fmt.Sprintf("; did you mean %q?", best)
	case len(valid) <= 8:
		return "; the keys here are " + strings.Join(valid, ", ")
	}
	return " (the README's Configuration section lists every key)"
}

// editDistance is the Levenshtein distance of a and b, counted in bytes (keys are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
