//go:build tools

// Package tools names the command built from this module: kube-router, run with only its
// NetworkPolicy firewall (iptables + ipset) on the local cluster's real node.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
