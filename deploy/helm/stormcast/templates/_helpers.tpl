{{- define "stormcast.name" -}}stormcast{{- end -}}

{{- define "stormcast.fullname" -}}
{{- if eq .Release.Name "stormcast" -}}stormcast{{- else -}}{{ printf "%s-stormcast" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "stormcast.selectorLabels" -}}
app.kubernetes.io/name: stormcast
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stormcast.labels" -}}
{{ include "stormcast.selectorLabels" . }}
app.kubernetes.io/part-of: stormcast
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stormcast.sourcesSecret" -}}
{{- .Values.sources.existingSecret | default (printf "%s-sources" (include "stormcast.fullname" .)) -}}
{{- end -}}

{{- define "stormcast.channelsSecret" -}}
{{- .Values.channels.existingSecret | default (printf "%s-channels" (include "stormcast.fullname" .)) -}}
{{- end -}}
