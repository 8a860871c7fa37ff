{{/*
The chart's name, cut to 63 characters (the limit of a Kubernetes label value).
*/}}
{{- define "podbatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name: the release name, with the chart's name unless the release
name already contains it; 63 characters at most, as some name fields allow no more.
*/}}
{{- define "podbatch.fullname" -}}
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
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "podbatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "podbatch.labels" -}}
helm.sh/chart: {{ include "podbatch.chart" . }}
{{ include "podbatch.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: podbatch
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: never change them, a Deployment's selector is immutable.
*/}}
{{- define "podbatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podbatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "podbatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "podbatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the cluster-scoped RBAC objects. They are shared by the whole cluster, so the
release namespace is part of the name: two releases of the same name in two namespaces
do not overwrite each other's ClusterRole.
*/}}
{{- define "podbatch.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "podbatch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The operator image, tagged with the chart's appVersion unless image.tag is given.
*/}}
{{- define "podbatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the leader-election Lease (in the release namespace).
*/}}
{{- define "podbatch.leaseName" -}}
{{- default (include "podbatch.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The PriorityClass of autoscaler pools' placeholder pods. */}}
{{- define "podbatch.placeholderPriorityClass" -}}
{{- default (printf "%s-placeholder" (include "podbatch.fullname" .)) .Values.config.placeholderPriorityClass.name -}}
{{- end }}
