{{/* Names, labels and the pieces every wharf pod shares. */}}

{{- define "wharf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: a release already named after the chart is not doubled. */}}
{{- define "wharf.fullname" -}}
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

{{- define "wharf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name for a component: <fullname>-<component>, within 63 characters. */}}
{{- define "wharf.componentName" -}}
{{- printf "%s-%s" (include "wharf.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wharf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wharf.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "wharf.labels" -}}
helm.sh/chart: {{ include "wharf.chart" .root }}
{{ include "wharf.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: wharf
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels of release-wide objects (ConfigMap, Secret, ServiceAccount). */}}
{{- define "wharf.commonLabels" -}}
helm.sh/chart: {{ include "wharf.chart" . }}
app.kubernetes.io/name: {{ include "wharf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: wharf
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wharf.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{- define "wharf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wharf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding DATABASE_URL, WHARF_ENCRYPTION_KEY and provider credentials. */}}
{{- define "wharf.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-secret" (include "wharf.fullname" .) }}
{{- end }}
{{- end }}

{{- define "wharf.configMapName" -}}
{{- printf "%s-config" (include "wharf.fullname" .) }}
{{- end }}

{{/*
Environment variable names that hold secrets or credentials: these never go into the ConfigMap
(`env`, `<role>.env`). URLs are included because they carry passwords.
*/}}
{{- define "wharf.isSecretName" -}}
{{- if or (has . (list "DATABASE_URL" "REDIS_URL" "SMTP_USER")) (regexMatch "(_KEY|_KEY_ID|_TOKEN|_PASS|_PASSWORD|_SECRET|_CREDENTIALS)$" .) -}}
true
{{- end }}
{{- end }}

{{/* Fails the render when a map of plain env (`.env`, named `.where`) holds a secret. */}}
{{- define "wharf.checkPlainEnv" -}}
{{- range $k, $v := .env }}
{{- if include "wharf.isSecretName" $k }}
{{- fail (printf "%s.%s looks like a secret: put it in existingSecret (or secret.values for development), never in a ConfigMap or a pod spec" $.where $k) }}
{{- end }}
{{- if eq $k "PORT" }}
{{- fail (printf "%s.PORT: set api.port instead (it is the container's PORT and the Service's port)" $.where) }}
{{- end }}
{{- if eq $k "METRICS_PORT" }}
{{- fail (printf "%s.METRICS_PORT: set metrics.port instead (it is the containerPort the probes and scrape annotations use)" $.where) }}
{{- end }}
{{- if eq $k "WORKER_SHUTDOWN_GRACE_SECONDS" }}
{{- fail (printf "%s.WORKER_SHUTDOWN_GRACE_SECONDS: set workerDefaults.shutdownGraceSeconds or workers.<name>.shutdownGraceSeconds instead (the pod's terminationGracePeriodSeconds follows it)" $.where) }}
{{- end }}
{{- end }}
{{- end }}

{{/* `{name, value}` entries for a map of plain env (sorted by name), for a role's own env. */}}
{{- define "wharf.envList" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/* A setting of a role, else the chart-wide one: (dict "role" .Values.api "root" $ "key" "nodeSelector"). */}}
{{- define "wharf.roleOrGlobal" -}}
{{- $v := index .role .key }}
{{- if not $v }}{{ $v = index .root.Values .key }}{{ end }}
{{- if $v }}{{ toYaml $v }}{{ end }}
{{- end }}

{{/*
The pod-spec fields every wharf pod shares: scheduling, security, volumes.
Arguments: root, role (the role's values), serviceAccountName (optional override).
*/}}
{{- define "wharf.podCommon" -}}
{{- $root := .root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (include "wharf.roleOrGlobal" (dict "role" .role "root" $root "key" "priorityClassName")) }}
priorityClassName: {{ . }}
{{- end }}
{{- with (include "wharf.roleOrGlobal" (dict "role" .role "root" $root "key" "nodeSelector")) }}
nodeSelector:
  {{- . | nindent 2 }}
{{- end }}
{{- with (include "wharf.roleOrGlobal" (dict "role" .role "root" $root "key" "tolerations")) }}
tolerations:
  {{- . | nindent 2 }}
{{- end }}
{{- with (include "wharf.roleOrGlobal" (dict "role" .role "root" $root "key" "affinity")) }}
affinity:
  {{- . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Spread constraints of a role (else the chart-wide ones); a constraint without a labelSelector
gets the role's own pods. Arguments: root, role, component.
*/}}
{{- define "wharf.topologySpread" -}}
{{- $list := .role.topologySpreadConstraints | default .root.Values.topologySpreadConstraints }}
{{- if $list }}
{{- $selector := include "wharf.selectorLabels" (dict "root" .root "component" .component) | fromYaml }}
{{- $out := list }}
{{- range $list }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $out | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes: the writable data dir and /tmp, plus extras. Argument: root; extra (list) optional. */}}
{{- define "wharf.volumes" -}}
volumes:
  - name: data
    emptyDir: {}
  - name: tmp
    emptyDir: {}
{{- with .extra }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.extraVolumes }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "wharf.volumeMounts" -}}
volumeMounts:
  - name: data
    mountPath: {{ .root.Values.dataDir }}
  - name: tmp
    mountPath: /tmp
{{- with .extra }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.extraVolumeMounts }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The container fields every wharf container shares: image, command, env sources, security.
Arguments: root, env (the role's own plain env map), extraEnv (list of {name, value}),
inlineEnv (the chart-wide `env` as entries instead of the ConfigMap: for the hook Job, which
runs before the ConfigMap exists). In envFrom the Secret comes last: on a clash it wins.
*/}}
{{- define "wharf.containerCommon" -}}
{{- $root := .root }}
image: {{ include "wharf.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
command:
  {{- toYaml $root.Values.image.command | nindent 2 }}
envFrom:
  {{- if not .inlineEnv }}
  - configMapRef:
      name: {{ include "wharf.configMapName" $root }}
  {{- end }}
  - secretRef:
      name: {{ include "wharf.secretName" $root }}
env:
  - name: WHARF_DATA_DIR
    value: {{ $root.Values.dataDir | quote }}
  {{- if and .inlineEnv $root.Values.env }}
  {{- include "wharf.envList" $root.Values.env | trim | nindent 2 }}
  {{- end }}
  {{- with .extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .env }}
  {{- include "wharf.envList" . | trim | nindent 2 }}
  {{- end }}
  {{- with $root.Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
{{- end }}

{{/* Whether workers and the scheduler serve /metrics and /healthz (METRICS_PORT is not 0). Argument: root. */}}
{{- define "wharf.metricsServerOn" -}}
{{- if gt (int .Values.metrics.port) 0 }}true{{ end }}
{{- end }}

{{/* The env entry every worker and scheduler container gets: METRICS_PORT = metrics.port. Argument: root. */}}
{{- define "wharf.metricsPortEnv" -}}
{{- dict "name" "METRICS_PORT" "value" (toString (int .Values.metrics.port)) | toYaml }}
{{- end }}

{{/*
prometheus.io/* pod annotations as YAML (fromYaml: a map), if metrics.scrapeAnnotations and the
port is not 0. A pod's own podAnnotations of the same names win. Arguments: root, port.
*/}}
{{- define "wharf.scrapeAnnotations" -}}
{{- if and .root.Values.metrics.scrapeAnnotations (gt (int .port) 0) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | int | toString | quote }}
prometheus.io/path: {{ .root.Values.metrics.path | quote }}
{{- end }}
{{- end }}

{{/*
The metrics port of a worker or scheduler container and the probes on it (/healthz), unless
metrics.port is 0. Arguments: root, role (its livenessProbe and startupProbe).
*/}}
{{- define "wharf.metricsServer" -}}
{{- if include "wharf.metricsServerOn" .root }}
ports:
  - name: metrics
    containerPort: {{ int .root.Values.metrics.port }}
    protocol: TCP
{{- with .role.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A worker entry with workerDefaults filled in: maps merge key by key, `resources` replaces.
Arguments: root, name, worker. Returns YAML (use fromYaml).
*/}}
{{- define "wharf.workerConfig" -}}
{{- $cfg := mergeOverwrite (deepCopy .root.Values.workerDefaults) (deepCopy .worker) }}
{{- if hasKey .worker "resources" }}
{{- $_ := set $cfg "resources" .worker.resources }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .name) }}
{{- fail (printf "workers.%s: the name must be lower-case letters, digits and '-' (it names a Deployment)" .name) }}
{{- end }}
{{- if not $cfg.pools }}
{{- fail (printf "workers.%s.pools: list the pools this Deployment runs (email, webhooks, embeddings, purge)" .name) }}
{{- end }}
{{- $grace := int $cfg.shutdownGraceSeconds }}
{{- $term := $cfg.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $term }}
{{- $term = add $grace (int $cfg.terminationGraceMarginSeconds) }}
{{- end }}
{{- if le (int $term) $grace }}
{{- fail (printf "workers.%s.terminationGracePeriodSeconds (%d) must be longer than its shutdownGraceSeconds (%d): Kubernetes would kill jobs the worker is still letting finish" .name (int $term) $grace) }}
{{- end }}
{{- $_ := set $cfg "terminationGracePeriodSeconds" (int $term) }}
{{- toYaml $cfg }}
{{- end }}

{{/* An autoscaling/v2 HorizontalPodAutoscaler. Arguments: root, name, component, autoscaling. */}}
{{- define "wharf.hpa" -}}
{{- $a := .autoscaling }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- include "wharf.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
  {{- if $a.metrics }}
    {{- toYaml $a.metrics | nindent 4 }}
  {{- else }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
  {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* A policy/v1 PodDisruptionBudget. Arguments: root, name, component, pdb. */}}
{{- define "wharf.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "wharf.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "wharf.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
