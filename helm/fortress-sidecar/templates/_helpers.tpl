{{/*
Chart name, truncated to 63 chars (DNS label limit).
*/}}
{{- define "fortress-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. If the release name already contains the chart
name it is used as is.
*/}}
{{- define "fortress-sidecar.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "fortress-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "fortress-sidecar.labels" -}}
helm.sh/chart: {{ include "fortress-sidecar.chart" . }}
{{ include "fortress-sidecar.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (must stay stable across upgrades).
*/}}
{{- define "fortress-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fortress-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ConfigMap holding fortress.yaml.
*/}}
{{- define "fortress-sidecar.configMapName" -}}
{{- printf "%s-config" (include "fortress-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fortress image reference: digest, else tag (default: the chart appVersion).
*/}}
{{- define "fortress-sidecar.fortressImage" -}}
{{- if .Values.fortress.image.digest }}
{{- printf "%s@%s" .Values.fortress.image.repository .Values.fortress.image.digest }}
{{- else }}
{{- $tag := .Values.fortress.image.tag | default .Chart.AppVersion | toString }}
{{- printf "%s:%s" .Values.fortress.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Every value an install cannot work without, checked at once: one `fail` naming each thing
to set (never a Ready pod that refuses everything).
*/}}
{{- define "fortress-sidecar.validate" -}}
{{- $e := list }}
{{- if not (has .Values.mode (list "tls" "ingress")) }}
{{- $e = append $e "set `mode`: `tls` (fortress terminates TLS; also set tls.secretName to a kubernetes.io/tls Secret) or `ingress` (a TLS-terminating ingress in front; also set ingress.trustedProxies to its pod CIDRs)" }}
{{- end }}
{{- if and (eq .Values.mode "tls") (not .Values.tls.secretName) }}
{{- $e = append $e "mode is `tls`: set tls.secretName to the kubernetes.io/tls Secret holding the certificate (e.g. a cert-manager Certificate's secretName)" }}
{{- end }}
{{- if and (eq .Values.mode "ingress") (not .Values.ingress.trustedProxies) }}
{{- $e = append $e "mode is `ingress`: set ingress.trustedProxies to the CIDRs of the ingress controller pods (fortress trusts X-Forwarded-Proto only from them)" }}
{{- end }}
{{- if not .Values.app.image }}
{{- $e = append $e "set app.image to your application's image; the app must listen on 127.0.0.1:<app.port> only" }}
{{- end }}
{{- if not .Values.fortress.policy }}
{{- $e = append $e "set fortress.policy: the fortress policy (routes, default, authentication, audit, …; everything of fortress.yaml but server:), see the chart README" }}
{{- else if hasKey .Values.fortress.policy "server" }}
{{- $e = append $e "fortress.policy must not contain `server:` (the chart renders it from ports, mode and fortress.server)" }}
{{- end }}
{{- $owned := list "listen" "admin" "probes" "upstream" "environment" "tls" "trusted_proxies" }}
{{- range $k := $owned }}
{{- if hasKey ($.Values.fortress.server | default dict) $k }}
{{- $e = append $e (printf "fortress.server.%s is set by the chart (from ports, mode, tls and ingress values): remove it" $k) }}
{{- end }}
{{- end }}
{{- $p := .Values.ports }}
{{- if or (eq (int $p.fortress) (int $p.probes)) (eq (int $p.fortress) (int $p.admin)) (eq (int $p.probes) (int $p.admin)) (eq (int .Values.app.port) (int $p.fortress)) (eq (int .Values.app.port) (int $p.probes)) (eq (int .Values.app.port) (int $p.admin)) }}
{{- $e = append $e "ports.fortress, ports.probes, ports.admin and app.port must all differ" }}
{{- end }}
{{- $min := add .Values.shutdown.delaySeconds .Values.shutdown.drainSeconds }}
{{- if and (not (kindIs "invalid" .Values.terminationGracePeriodSeconds)) (le (int .Values.terminationGracePeriodSeconds) (int $min)) }}
{{- $e = append $e (printf "terminationGracePeriodSeconds (%v) must be longer than shutdown.delaySeconds + shutdown.drainSeconds (%v), or Kubernetes kills fortress mid-drain" .Values.terminationGracePeriodSeconds $min) }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- $e = append $e "podDisruptionBudget: set only one of maxUnavailable and minAvailable" }}
{{- end }}
{{- if $e }}
{{- fail (printf "\n\nfortress-sidecar cannot be installed with these values:\n  - %s\n\nSee helm/fortress-sidecar/README.md and the complete examples in helm/fortress-sidecar/ci/." (join "\n  - " $e)) }}
{{- end }}
{{- end }}

{{/*
Seconds until Kubernetes kills the pod: longer than fortress's delay + drain.
*/}}
{{- define "fortress-sidecar.gracePeriod" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add .Values.shutdown.delaySeconds .Values.shutdown.drainSeconds 10 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
The client listener's port name: https (mode tls) or http (mode ingress).
*/}}
{{- define "fortress-sidecar.proxyPortName" -}}
{{- if eq .Values.mode "tls" }}https{{ else }}http{{ end }}
{{- end }}

{{/*
The main Service's port: service.port, else 443 (tls) / 80 (ingress).
*/}}
{{- define "fortress-sidecar.servicePort" -}}
{{- if kindIs "invalid" .Values.service.port }}
{{- if eq .Values.mode "tls" }}443{{ else }}80{{ end }}
{{- else }}
{{- .Values.service.port }}
{{- end }}
{{- end }}

{{/*
The `server:` block of fortress.yaml: the chart's settings over fortress.server.
*/}}
{{- define "fortress-sidecar.server" -}}
{{- $s := deepCopy (.Values.fortress.server | default dict) }}
{{- $_ := set $s "listen" (printf "0.0.0.0:%v" .Values.ports.fortress) }}
{{- $_ := set $s "admin" (printf "127.0.0.1:%v" .Values.ports.admin) }}
{{- $_ := set $s "probes" (printf "0.0.0.0:%v" .Values.ports.probes) }}
{{- $_ := set $s "upstream" (printf "http://127.0.0.1:%v" .Values.app.port) }}
{{- $_ := set $s "environment" .Values.fortress.environment }}
{{- if eq .Values.mode "tls" }}
{{- $_ := set $s "tls" (dict "cert" "/etc/fortress-tls/tls.crt" "key" "/etc/fortress-tls/tls.key") }}
{{- else }}
{{- $_ := set $s "trusted_proxies" .Values.ingress.trustedProxies }}
{{- $_ := set $s "require_https" true }}
{{- end }}
{{- $t := deepCopy (get $s "timeouts" | default dict) }}
{{- $_ := set $t "shutdown_grace" (printf "%vs" .Values.shutdown.drainSeconds) }}
{{- /* A native sidecar is stopped after the app: the delay would only serve 502s. */}}
{{- $_ := set $t "shutdown_delay" (printf "%vs" (ternary 0 .Values.shutdown.delaySeconds .Values.fortress.nativeSidecar)) }}
{{- $_ := set $s "timeouts" $t }}
{{- toYaml $s }}
{{- end }}

{{/*
The whole fortress.yaml.
*/}}
{{- define "fortress-sidecar.config" -}}
{{- $c := deepCopy .Values.fortress.policy }}
{{- $_ := set $c "server" (include "fortress-sidecar.server" . | fromYaml) }}
{{- toYaml $c }}
{{- end }}

{{/*
Settings fortress reads only at startup (docs/operations.md): their checksum is a pod
annotation, so changing one rolls the pods; everything else is hot-reloaded.
*/}}
{{- define "fortress-sidecar.restartChecksum" -}}
{{- $s := include "fortress-sidecar.server" . | fromYaml }}
{{- $r := dict "listen" $s.listen "admin" $s.admin "probes" $s.probes "tls" (hasKey $s "tls") "max_connections" (get $s "max_connections") "upstream_connect" (get $s.timeouts "upstream_connect") "state_dir" (get $s "state_dir") "audit" (get .Values.fortress.policy "audit") "telemetry" (get .Values.fortress.policy "telemetry") }}
{{- toJson $r | sha256sum }}
{{- end }}
