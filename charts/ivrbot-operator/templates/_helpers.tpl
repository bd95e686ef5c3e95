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

{{/* The namespaced permissions: exactly what the operator calls (tests/chart/test_rbac.py checks).
     kopf: watch IVRBots, patch them (finalizer, progress annotations) and their status, index pods,
     post events (core v1). kube.py: create/delete pods, get/create/patch dispatcher ConfigMaps.
     Pods carry an owner reference with blockOwnerDeletion: clusters enforcing owner references
     (OpenShift's OwnerReferencesPermissionEnforcement) require update on ivrbots/finalizers. */}}
{{- define "ivrbot-operator.namespacedRules" -}}
- apiGroups: ["ivrbot.dev"]
  resources: ["ivrbots"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["ivrbot.dev"]
  resources: ["ivrbots/status"]
  verbs: ["patch"]
- apiGroups: ["ivrbot.dev"]
  resources: ["ivrbots/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
