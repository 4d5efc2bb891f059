{{/*
Web configuration file (TLS, basic auth; exporter-toolkit format), mounted at
/etc/gecko-exporter/web with the TLS Secret's files beside it.
*/}}
{{- define "gecko-exporter.webConfigDir" -}}
/etc/gecko-exporter/web
{{- end }}

{{/* Name of the Secret holding web-config.yml. */}}
{{- define "gecko-exporter.webConfigSecret" -}}
{{- .Values.webConfig.existingSecret | default (printf "%s-web-config" (include "gecko-exporter.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/* "true" when the exporter serves HTTPS: set explicitly, or tls_server_config in the chart-rendered file. */}}
{{- define "gecko-exporter.webTLS" -}}
{{- $w := .Values.webConfig }}
{{- $cfg := $w.config | default dict }}
{{- if and $w.enabled (or $w.tls (and (not $w.existingSecret) (get $cfg "tls_server_config"))) }}true{{ end }}
{{- end }}

{{/* "true" when clients must present a certificate (the kubelet's probes cannot). */}}
{{- define "gecko-exporter.webClientCert" -}}
{{- $w := .Values.webConfig }}
{{- $tls := get ($w.config | default dict) "tls_server_config" | default dict }}
{{- $derived := and (not $w.existingSecret) (eq (get $tls "client_auth_type" | default "" | toString) "RequireAndVerifyClientCert") }}
{{- if and $w.enabled (or $w.clientCertRequired $derived) }}true{{ end }}
{{- end }}

{{/* A liveness/readiness handler for path (argument: dict "root" $ "path" "/healthz"). */}}
{{- define "gecko-exporter.probeHandler" -}}
{{- if include "gecko-exporter.webClientCert" .root }}
tcpSocket:
  port: http
{{- else }}
httpGet:
  path: {{ .path }}
  port: http
  {{- if include "gecko-exporter.webTLS" .root }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}
