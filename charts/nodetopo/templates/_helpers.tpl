{{/* The chart name. */}}
{{- define "nodetopo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource name prefix: the release name when it already holds the chart name. */}}
{{- define "nodetopo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "nodetopo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodetopo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Common labels; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "nodetopo.labels" -}}
{{ include "nodetopo.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "nodetopo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "nodetopo.agentServiceAccount" -}}
{{- default (printf "%s-agent" (include "nodetopo.fullname" .)) .Values.agent.serviceAccount.name -}}
{{- end -}}

{{- define "nodetopo.extenderServiceAccount" -}}
{{- default (printf "%s-extender" (include "nodetopo.fullname" .)) .Values.extender.serviceAccount.name -}}
{{- end -}}

{{/* Label keys the compatibility sets write; the admission policy lets the agent change them. */}}
{{- define "nodetopo.compatKeys" -}}
{{- $keys := list -}}
{{- range .Values.compatLabels -}}
{{- if eq . "topograph" }}{{ $keys = append $keys "'accelerator.topograph.run/domain'" }}{{ end -}}
{{- if eq . "gfd-clique" }}{{ $keys = append $keys "'nvidia.com/gpu.clique'" }}{{ end -}}
{{- end -}}
[{{ join ", " $keys }}]
{{- end -}}

{{- define "nodetopo.webhookServiceAccount" -}}
{{- default (printf "%s-webhook" (include "nodetopo.fullname" .)) .Values.webhook.serviceAccount.name -}}
{{- end -}}

{{/* The webhook's serving certificate Secret. */}}
{{- define "nodetopo.webhookSecret" -}}
{{- if and (eq .Values.webhook.tls.mode "secret") .Values.webhook.tls.secretName -}}
{{- .Values.webhook.tls.secretName -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "nodetopo.fullname" .) -}}
{{- end -}}
{{- end -}}
