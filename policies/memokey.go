package policies

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// memoPlan is what a compiled policy set needs from the memo: the input paths its rules
// read, from which a decision's key is built, or why its decisions cannot be reused.
//
// The paths are derived from the compiled modules, never picked by hand: a key that leaves
// out one value a rule reads hands one caller's decision to another (Oathkeeper's
// CVE-2021-32701 cached introspection results without their scopes).
type memoPlan struct {
	// paths are the input paths read, each the ground string prefix of a reference rooted
	// at input, none a prefix of another; sorted. An empty path stands for all of input.
	paths [][]*ast.Term
	// off, when not empty, is why decisions of the set are always evaluated: the rules call
	// a non-deterministic builtin (named in detail), so the same input may decide differently.
	off    string
	detail string
}

// Reasons the memo is off, as the metric's reason label and in MemoStatus.
const (
	MemoOffConfig           = "disabled_by_config"
	MemoOffNondeterministic = "nondeterministic_builtin"
)

// planMemo walks every rule of the compiled set, reachable from the decision or not (a
// superset of what the decision reads, and no guesswork about references with variables
// into data.moltgate): every reference rooted at input contributes its leading run of
// string keys (input.request.headers[x] contributes input.request.headers; a bare input,
// all of input), and every call of a builtin OPA marks non-deterministic turns the memo off.
func planMemo(c *ast.Compiler) *memoPlan {
	read := map[string][]*ast.Term{}
	var nondet []string
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		m := c.Modules[name]
		ast.WalkRefs(m, func(ref ast.Ref) bool {
			if !ref.HasPrefix(ast.InputRootRef) {
				return false
			}
			path := inputPath(ref)
			read[pathKey(path)] = path
			return false
		})
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if !x.IsCall() {
				return false
			}
			op := x.Operator().String()
			if b, ok := ast.BuiltinMap[op]; ok && b.Nondeterministic {
				loc := name
				if x.Location != nil {
					loc = fmt.Sprintf("%s:%d", x.Location.File, x.Location.Row)
				}
				nondet = append(nondet, fmt.Sprintf("%s at %s", op, loc))
			}
			return false
		})
	}
	if len(nondet) > 0 {
		return &memoPlan{off: MemoOffNondeterministic, detail: "rules call non-deterministic builtins: " + strings.Join(nondet, ", ")}
	}
	p := &memoPlan{}
	keys := slices.Sorted(maps.Keys(read))
	for _, k := range keys {
		covered := false
		for _, q := range p.paths {
			if hasPathPrefix(read[k], q) {
				covered = true
				break
			}
		}
		if !covered {
			p.paths = append(p.paths, read[k])
		}
	}
	return p
}

// inputPath is the leading run of string keys of a reference rooted at input.
func inputPath(ref ast.Ref) []*ast.Term {
	var path []*ast.Term
	for _, t := range ref[1:] {
		if _, ok := t.Value.(ast.String); !ok {
			break
		}
		path = append(path, t)
	}
	return path
}

// pathKey is a sortable, unambiguous name of a path: a prefix sorts before its extensions.
func pathKey(path []*ast.Term) string {
	var b strings.Builder
	for _, t := range path {
		s := string(t.Value.(ast.String))
		fmt.Fprintf(&b, "%d:%s\x00", len(s), s)
	}
	return b.String()
}

func hasPathPrefix(path, prefix []*ast.Term) bool {
	if len(prefix) > len(path) {
		return false
	}
	for i := range prefix {
		if !path[i].Equal(prefix[i]) {
			return false
		}
	}
	return true
}

// String lists the paths as Rego references, for tests and /readyz detail.
func (p *memoPlan) String() string {
	if p.off != "" {
		return p.off
	}
	names := make([]string, len(p.paths))
	for i, path := range p.paths {
		names[i] = ast.Ref(append([]*ast.Term{ast.InputRootDocument}, path...)).String()
	}
	return strings.Join(names, " ")
}

// keyEncoder builds memo keys into a buffer it keeps between decisions (see memoKey).
type keyEncoder struct {
	buf []byte
	ok  bool
}

// key encodes into k.buf the key of input under the plan: the revision, the data generation
// and, for each path, the value input holds there. The encoding is injective (every value
// is tagged and length-prefixed), so two inputs share a key only when every value the rules
// read is the same: the memo compares whole keys, never just a hash. It reports false for
// an input holding something that is not plain JSON (the codec never builds one).
func (k *keyEncoder) key(p *memoPlan, revision string, gen uint64, input ast.Value) bool {
	k.buf, k.ok = k.buf[:0], true
	k.buf = binary.AppendUvarint(k.buf, uint64(len(revision)))
	k.buf = append(k.buf, revision...)
	k.buf = binary.AppendUvarint(k.buf, gen)
	for _, path := range p.paths {
		v := input
		depth := 0
		for _, key := range path {
			obj, isObj := v.(ast.Object)
			if !isObj {
				break // the rule reads below a non-object: undefined, given by v itself
			}
			t := obj.Get(key)
			if t == nil {
				v = nil
				break
			}
			v, depth = t.Value, depth+1
		}
		k.buf = binary.AppendUvarint(k.buf, uint64(depth))
		if v == nil {
			k.buf = append(k.buf, 'u')
			continue
		}
		k.value(v)
	}
	return k.ok
}

// value appends a tagged, length-prefixed encoding of a JSON-like value. (Methods, not
// closures: a closure capturing the buffer would move it to the heap on every call.)
func (k *keyEncoder) value(v ast.Value) {
	switch v := v.(type) {
	case ast.Null:
		k.buf = append(k.buf, 'z')
	case ast.Boolean:
		if v {
			k.buf = append(k.buf, 't')
		} else {
			k.buf = append(k.buf, 'f')
		}
	case ast.Number:
		k.str('n', string(v))
	case ast.String:
		k.str('s', string(v))
	case *ast.Array:
		k.buf = append(k.buf, 'a')
		k.buf = binary.AppendUvarint(k.buf, uint64(v.Len()))
		for i := range v.Len() {
			k.value(v.Elem(i).Value)
		}
	case ast.Object:
		k.buf = append(k.buf, 'o')
		k.buf = binary.AppendUvarint(k.buf, uint64(v.Len()))
		v.Foreach(k.pair)
	case ast.Set:
		k.buf = append(k.buf, 'S')
		k.buf = binary.AppendUvarint(k.buf, uint64(v.Len()))
		v.Foreach(k.elem)
	default:
		k.ok = false
	}
}

func (k *keyEncoder) str(tag byte, s string) {
	k.buf = append(k.buf, tag)
	k.buf = binary.AppendUvarint(k.buf, uint64(len(s)))
	k.buf = append(k.buf, s...)
}

func (k *keyEncoder) pair(key, v *ast.Term) {
	k.value(key.Value)
	k.value(v.Value)
}

func (k *keyEncoder) elem(e *ast.Term) { k.value(e.Value) }
