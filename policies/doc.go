// Package policies decides every request moltgate handles with Rego policies evaluated by
// an embedded OPA.
//
// It holds the default policy set (package moltgate.authz: authz.rego, proxy.rego,
// admin.rego, their *_test.rego files and roles.json, embedded in the binary) and the
// Engine that compiles a policy set once, prepares the single query
// data.moltgate.authz.decision, keeps the data the policies read (data.gateways,
// data.platform_admins) in step with the registry, hot-reloads a policy directory or a
// polled OPA bundle (bundle.go; signatures checked by OPA's bundle package) and runs the
// Rego test suites. README.md in this folder is the guide for policy authors.
//
// Invariant: the engine fails closed. Engine.Decide returns Allow true only when the policy
// produced a well-formed decision object whose allow is the boolean true and no error
// occurred; any evaluation error, timeout, undefined or malformed result yields
// Decision{Allow: false, Reason: "policy_error", Status: 503} together with an error that
// matches ErrPolicy. A policy set that does not compile, type-check and pass its own tests
// (or a bundle whose signature does not verify) is never installed: the previous one keeps
// serving.
package policies
