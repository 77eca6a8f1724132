{{- define "fledge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fledge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fledge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fledge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fledge.labels" -}}
{{ include "fledge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "fledge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fledge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
What the operator reads and writes in the namespaces it watches: a ClusterRole
for all of them, or a Role in .Values.namespace. Every verb is one a call of
the operator makes; docs/install.md says what each rule is for.
*/}}
{{- define "fledge.rules" -}}
- apiGroups: [flagger.app]
  resources: [canaries]
  verbs: [get, list, watch, patch]
- apiGroups: [flagger.app]
  resources: [canaries/status]
  verbs: [patch]
- apiGroups: [flagger.app]
  resources: [metrictemplates, alertproviders]
  verbs: [get]
- apiGroups: [policies.fledge.dev]
  resources: [rolloutpolicies]
  verbs: [list, watch]
- apiGroups: [policies.fledge.dev]
  resources: [rolloutpolicies/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, get, list, watch, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [create, get, list, watch, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [create, list, watch, patch]
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: [create, get, list, watch, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [appmesh.k8s.aws]
  resources: [virtualnodes, virtualservices, virtualrouters]
  verbs: [get, delete]
- apiGroups: [appmesh.k8s.aws]
  resources: [virtualnodes, virtualservices]
  verbs: [create, list, watch, patch]
- apiGroups: [appmesh.k8s.aws]
  resources: [virtualrouters]
  verbs: [create, get, list, watch, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, update, patch, delete]
{{- end }}
