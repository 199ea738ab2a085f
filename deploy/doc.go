// Package deploy holds the tests of the deployment files beside it: the Dockerfile, the
// Kubernetes manifests, fly.toml, the cloudflared example, the Prometheus rules and the
// Grafana dashboard. It is a module of its own so that the Kubernetes API types and
// Prometheus's PromQL parser, which only these tests need, stay out of moltgate's build.
package deploy
