{{/* NOTES.txt body, a named template so the tests can render it without a cluster. */}}
{{- define "gecko-exporter.notes" -}}
{{- $targets := (include "gecko-exporter.targets" . | fromJson).targets }}
gecko-exporter {{ .Chart.AppVersion }} is installed as release {{ .Release.Name }} in namespace {{ .Release.Namespace }}.

Exporters ({{ len $targets }}):
{{- range $targets }}
  - {{ .name }}: Deployment/Service {{ .fullname }}, DSN from Secret {{ .secretName }} key {{ .secretKey }}
    {{- if not .createSecret }} (existing Secret: create it before the pod can start){{ end }}
{{- end }}

{{- range $targets }}
{{- if not .createSecret }}

The Secret {{ .secretName }} is not managed by this chart. Create it with, for example:
  kubectl -n {{ $.Release.Namespace }} create secret generic {{ .secretName }} \
    --from-literal={{ .secretKey }}='postgresql://USER:PASSWORD@HOST:5432/DATABASE?sslmode=require'
Changing it later does not restart the exporter: kubectl -n {{ $.Release.Namespace }} rollout restart deployment/{{ .fullname }}
{{- end }}
{{- end }}

Check one exporter:
  kubectl -n {{ .Release.Namespace }} port-forward service/{{ (first $targets).fullname }} {{ .Values.service.port }}
  curl -s localhost:{{ .Values.service.port }}/readyz; curl -s localhost:{{ .Values.service.port }}/metrics | grep '^gecko_up'

{{- if include "gecko-exporter.serviceMonitor.render" . }}

ServiceMonitors are rendered{{ with .Values.serviceMonitor.labels }} with labels {{ toJson . }}{{ end }}.
{{- else if .Values.serviceMonitor.enabled }}

NOTE: no ServiceMonitor was rendered: this cluster does not serve monitoring.coreos.com/v1
ServiceMonitor. Install the Prometheus Operator CRDs, or set serviceMonitor.force=true.
{{- end }}
{{- if include "gecko-exporter.prometheusRule.render" . }}
The alert rules are rendered as PrometheusRule {{ include "gecko-exporter.fullname" . }}{{ with .Values.prometheusRule.additionalLabels }} with labels {{ toJson . }}{{ end }}.
{{- else if .Values.prometheusRule.enabled }}

NOTE: no PrometheusRule was rendered: this cluster does not serve monitoring.coreos.com/v1
PrometheusRule. Install the Prometheus Operator CRDs, or set prometheusRule.force=true.
{{- end }}
{{- if .Values.dashboards.enabled }}

Grafana dashboards: {{ len (.Files.Glob "dashboards/*.json") }} ConfigMap(s) labelled grafana_dashboard="1".
{{- end }}
{{- end }}
