{{- define "parsec-operator.name" -}}parsec-operator{{- end }}

{{- define "parsec-operator.labels" -}}
app.kubernetes.io/name: parsec-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "parsec-operator.selector" -}}
app.kubernetes.io/name: parsec-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "parsec-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
