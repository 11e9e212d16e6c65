{{- define "pki-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "pki-operator.serviceAccountName" -}}
{{- default (include "pki-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "pki-operator.labels" -}}
app.kubernetes.io/name: pki-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pki-operator.selectorLabels" -}}
app.kubernetes.io/name: pki-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
