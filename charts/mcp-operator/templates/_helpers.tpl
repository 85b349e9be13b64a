{{/*
Names. The app name (label app.kubernetes.io/name) is the chart name unless nameOverride is set.
Object names follow Helm's convention: the release name when it already contains the app name,
otherwise "<release>-<app name>", unless fullnameOverride is set. The guide's release
`mcp-operator` therefore keeps the names the guide and the plain manifests use
(svc/mcp-operator-metrics, serviceaccount mcp-operator), and a second release (say `tenant-b`)
gets its own cluster-scoped names (ClusterRole tenant-b-mcp-operator).
*/}}
{{- define "mcp-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "mcp-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mcp-operator.serviceAccountName" -}}
{{ include "mcp-operator.fullname" . }}
{{- end }}

{{- define "mcp-operator.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release (Deployment selectors are immutable). */}}
{{- define "mcp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels on every object. */}}
{{- define "mcp-operator.labels" -}}
helm.sh/chart: {{ include "mcp-operator.chart" . }}
{{ include "mcp-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mcp-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
RBAC rules for namespaced resources. Least privilege: the operator writes its children with
server-side apply (patch), so it never needs update on them; Secrets are only read by name
(get), never listed or watched.
*/}}
{{- define "mcp-operator.namespacedRules" -}}
# Only the verbs the controllers use (src/controller): watches list+watch, server-side apply
# patches (and creates), pruning deletes, reads get.
- apiGroups: ["mcp.n-takatsu.dev"]
  resources: ["mcpservers", "plugins", "securitypolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["mcp.n-takatsu.dev"]
  resources: ["mcpservers/status", "plugins/status", "securitypolicies/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["mcp.n-takatsu.dev"]
  resources: ["mcpservers/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A held-back server still scales: only the replica count of its running Deployment.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts", "configmaps"]
  verbs: ["list", "watch", "create", "patch"]
# Pods are cached (status, and the gateway status read from their admin port).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Referenced Secrets are read one by one; never listed or watched. create/update only for what a
# SecurityPolicy asks the operator to issue (selfSigned, generateSecret): a missing Secret is
# created, and only a certificate it issued itself is ever replaced.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update"]
{{- if and .Values.gateway.status (eq .Values.gateway.statusVia "proxy") }}
# The gateway's status document, read through the API server's service proxy.
- apiGroups: [""]
  resources: ["services/proxy"]
  verbs: ["get"]
{{- end }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}

{{/* RBAC rules for cluster-scoped reads (always granted cluster-wide). */}}
{{- define "mcp-operator.clusterRules" -}}
# VM isolation checks that the configured RuntimeClass exists (from a cache of RuntimeClasses).
- apiGroups: ["node.k8s.io"]
  resources: ["runtimeclasses"]
  verbs: ["list", "watch"]
# The controllers start only once their CRDs are established.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get"]
{{- if .Values.crds.upgrade }}
# The operator upgrades its own three CRDs when it starts leading (never creates or deletes any).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["mcpservers.mcp.n-takatsu.dev", "plugins.mcp.n-takatsu.dev", "securitypolicies.mcp.n-takatsu.dev"]
  verbs: ["update"]
{{- end }}
{{- end }}
