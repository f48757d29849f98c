{{/*
Chart name, truncated to 63 chars (DNS label limit).
*/}}
{{- define "fortress-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart
name it is used as is.
*/}}
{{- define "fortress-sidecar.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "fortress-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "fortress-sidecar.labels" -}}
helm.sh/chart: {{ include "fortress-sidecar.chart" . }}
{{ include "fortress-sidecar.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (must stay stable across upgrades).
*/}}
{{- define "fortress-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fortress-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ConfigMap holding fortress.yaml.
*/}}
{{- define "fortress-sidecar.configMapName" -}}
{{- printf "%s-config" (include "fortress-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fortress image reference; the tag defaults to the chart appVersion.
*/}}
{{- define "fortress-sidecar.fortressImage" -}}
{{- $tag := .Values.fortress.image.tag | default .Chart.AppVersion | toString }}
{{- printf "%s:%s" .Values.fortress.image.repository $tag }}
{{- end }}

{{/*
Whether the Service exposes the admin port.
*/}}
{{- define "fortress-sidecar.exposeAdmin" -}}
{{- if or .Values.service.exposeAdmin .Values.serviceMonitor.enabled }}true{{ end }}
{{- end }}
