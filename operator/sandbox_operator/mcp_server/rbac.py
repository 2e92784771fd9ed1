"""What the HTTP server's own identity may do: review tokens and impersonate its callers, nothing else.

Everything a caller does is then authorised as that caller: its user name, uid and groups. A token's extra fields are
not forwarded (RBAC does not read them, and impersonating them would need a rule per key). The chart's ClusterRole
carries these rules; a test compares them.
"""

from __future__ import annotations

from typing import Any, Final

SERVER_RULES: Final[list[dict[str, Any]]] = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
    {"apiGroups": ["authentication.k8s.io"], "resources": ["uids"], "verbs": ["impersonate"]},
]
