{{/* Chart name. */}}
{{- define "collection-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "collection-operator.fullname" -}}
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

{{- define "collection-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "collection-operator.labels" -}}
helm.sh/chart: {{ include "collection-operator.chart" . }}
{{ include "collection-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: collection-operator
{{- end }}

{{/* Selector labels (immutable in a Deployment: never add to them). */}}
{{- define "collection-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "collection-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "collection-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "collection-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "collection-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace the operator watches with scope Namespace. */}}
{{- define "collection-operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.watch.namespace }}
{{- end }}

{{- define "collection-operator.leaseName" -}}
{{- default (include "collection-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Namespace of the default Coordinator. */}}
{{- define "collection-operator.coordinatorNamespace" -}}
{{- if .Values.coordinator.namespace }}
{{- .Values.coordinator.namespace }}
{{- else if eq .Values.watch.scope "Namespace" }}
{{- include "collection-operator.watchNamespace" . }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Whether the default Coordinator renders: its API must already be served (Helm maps
every kind before it creates anything, so a release cannot create a CRD and an instance of
it at once); with crds.install=false the CRDs were applied beforehand. */}}
{{- define "collection-operator.coordinatorRenders" -}}
{{- if and .Values.coordinator.create (or (.Capabilities.APIVersions.Has "collections.dev/v1alpha1/Coordinator") (not .Values.crds.install)) -}}
true
{{- end }}
{{- end }}

{{/* Checks that cannot be expressed in values.schema.json. */}}
{{- define "collection-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: two replicas without a Lease would both write to the engine" }}
{{- end }}
{{- if and (ne .Values.watch.scope "Namespace") .Values.watch.namespace }}
{{- fail "watch.namespace is used only with watch.scope=Namespace" }}
{{- end }}
{{- end }}
