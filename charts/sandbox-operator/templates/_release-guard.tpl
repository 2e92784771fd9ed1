{{- /* A second release of this chart in one cluster must not take over the first one's cluster-wide objects: Helm
       would refuse with "invalid ownership metadata"; this says which value to change instead. `lookup` sees the
       cluster on install and upgrade (not in `helm template`). */}}
{{- define "sandbox-operator.ownedElsewhere" -}}
{{- $object := index . 0 -}}
{{- $release := index . 1 -}}
{{- if $object -}}
{{- $owner := index (($object.metadata).annotations | default dict) "meta.helm.sh/release-name" | default "" -}}
{{- $ownerNamespace := index (($object.metadata).annotations | default dict) "meta.helm.sh/release-namespace" | default "" -}}
{{- if and $owner (or (ne $owner $release.Name) (ne $ownerNamespace $release.Namespace)) -}}
{{- printf "%s/%s" $ownerNamespace $owner -}}
{{- end -}}
{{- end -}}
{{- end -}}
