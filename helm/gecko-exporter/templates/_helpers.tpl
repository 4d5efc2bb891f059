{{/* Chart name. */}}
{{- define "gecko-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (63 characters at most). */}}
{{- define "gecko-exporter.fullname" -}}
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

{{/* chart label value */}}
{{- define "gecko-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "gecko-exporter.labels" -}}
helm.sh/chart: {{ include "gecko-exporter.chart" . }}
app.kubernetes.io/name: {{ include "gecko-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gecko-exporter
{{- end }}

{{/*
Selector labels of one exporter. Argument: dict "root" $ "target" $target.
*/}}
{{- define "gecko-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gecko-exporter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: exporter
gecko-exporter/target: {{ .target.name }}
{{- end }}

{{/*
All labels of one exporter's objects: release labels, selector labels, then the target's own
labels (which may not override the former). Argument: dict "root" $ "target" $target.
*/}}
{{- define "gecko-exporter.targetLabels" -}}
{{- $fixed := merge (include "gecko-exporter.labels" .root | fromYaml) (include "gecko-exporter.selectorLabels" . | fromYaml) }}
{{- toYaml (merge $fixed .target.labels) }}
{{- end }}

{{/*
The exporters to render, as JSON {"targets": [...]}, each normalised to:
  name, fullname, labels, config (map), podAnnotations, resources,
  secretName, secretKey, createSecret (bool), url ("" unless createSecret).
With `targets` empty: one exporter named "default" from the top-level values.
Fails on a missing DSN source and on duplicate names.
*/}}
{{- define "gecko-exporter.targets" -}}
{{- $root := . }}
{{- $fullname := include "gecko-exporter.fullname" . }}
{{- $entries := .Values.targets }}
{{- $single := empty $entries }}
{{- if $single }}
{{- $entries = list (dict "name" "default" "database" .Values.database) }}
{{- end }}
{{- $out := list }}
{{- $seen := dict }}
{{- range $entries }}
{{- $name := required "targets[].name is required" .name }}
{{- $objName := $fullname }}
{{- if not $single }}
{{- $objName = printf "%s-%s" $fullname $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- if hasKey $seen $objName }}
{{- fail (printf "targets: %q is not unique (object name %q)" $name $objName) }}
{{- end }}
{{- $_ := set $seen $objName true }}
{{- $db := .database | default dict }}
{{- $url := $db.url | default "" }}
{{- $secretName := $db.existingSecret | default "" }}
{{- $create := ne $url "" }}
{{- if $create }}
{{- $secretName = printf "%s-database" $objName | trunc 63 | trimSuffix "-" }}
{{- else if not $secretName }}
{{- fail (printf "target %q: set database.existingSecret (name of a Secret holding the DSN) or database.url" $name) }}
{{- end }}
{{- $config := mergeOverwrite (deepCopy ($root.Values.config | default dict)) (deepCopy (.config | default dict)) }}
{{- $target := dict
    "name" $name
    "fullname" $objName
    "labels" (merge (deepCopy (.labels | default dict)) ($root.Values.labels | default dict))
    "config" $config
    "podAnnotations" (merge (deepCopy (.podAnnotations | default dict)) ($root.Values.podAnnotations | default dict))
    "resources" (.resources | default $root.Values.resources)
    "secretName" $secretName
    "secretKey" ($db.secretKey | default "dsn")
    "createSecret" $create
    "url" $url
}}
{{- $out = append $out $target }}
{{- end }}
{{- toJson (dict "targets" $out) }}
{{- end }}

{{/* Name of the ServiceAccount the exporters run as. */}}
{{- define "gecko-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gecko-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: registry/repository, then @digest or :tag (default appVersion). */}}
{{- define "gecko-exporter.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry $repo }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Rendered config file of one target ("" when it has no config). Argument: the target. */}}
{{- define "gecko-exporter.configFile" -}}
{{- if .config }}
{{- toYaml .config }}
{{- end }}
{{- end }}

{{/* Whether to render ServiceMonitors: enabled and (the API is served or forced). */}}
{{- define "gecko-exporter.serviceMonitor.render" -}}
{{- if and .Values.serviceMonitor.enabled (or .Values.serviceMonitor.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) }}true{{ end }}
{{- end }}

{{/* Whether to render the PrometheusRule: enabled and (the API is served or forced). */}}
{{- define "gecko-exporter.prometheusRule.render" -}}
{{- if and .Values.prometheusRule.enabled (or .Values.prometheusRule.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule")) }}true{{ end }}
{{- end }}
