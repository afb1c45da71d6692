{{/* Chart name, truncated to the 63 characters DNS labels allow. */}}
{{- define "lcdserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release already names it. */}}
{{- define "lcdserve.fullname" -}}
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

{{- define "lcdserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lcdserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lcdserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "lcdserve.labels" -}}
helm.sh/chart: {{ include "lcdserve.chart" . }}
{{ include "lcdserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lcdserve.claimName" -}}
{{- default (printf "%s-artifacts" (include "lcdserve.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{- define "lcdserve.jobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lcdserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: jobs
{{- end }}

{{- define "lcdserve.jobs.labels" -}}
helm.sh/chart: {{ include "lcdserve.chart" . }}
{{ include "lcdserve.jobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lcdserve.jobs.tokenSecret" -}}
{{- default (printf "%s-jobs-token" (include "lcdserve.fullname" .)) .Values.jobs.token.existingSecret }}
{{- end }}

{{- define "lcdserve.jobs.claimName" -}}
{{- default (printf "%s-jobs-store" (include "lcdserve.fullname" .)) .Values.jobs.persistence.existingClaim }}
{{- end }}
