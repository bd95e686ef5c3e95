{{- define "ivrbot-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ivrbot-operator.labels" -}}
app.kubernetes.io/name: ivrbot-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ivrbot-operator.selector" -}}
app.kubernetes.io/name: ivrbot-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The namespaced permissions: IVRBots, their pods, dispatcher ConfigMaps, events. */}}
{{- define "ivrbot-operator.namespacedRules" -}}
- apiGroups: ["ivrbot.dev"]
  resources: ["ivrbots"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["ivrbot.dev"]
  resources: ["ivrbots/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
