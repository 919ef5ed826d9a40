{{/* The chart's name, at most 63 characters. */}}
{{- define "scale.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already contains the chart's. */}}
{{- define "scale.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "scale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: only name, instance and component (selectors are immutable). Call with (list $ "component"). */}}
{{- define "scale.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "scale.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every object's labels. Call with (list $ "component"). */}}
{{- define "scale.labels" -}}
{{- $ := index . 0 -}}
helm.sh/chart: {{ include "scale.chart" $ }}
{{ include "scale.selectorLabels" . }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
app.kubernetes.io/part-of: scale
{{- with $.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A component's object name. Call with (list $ "component"). */}}
{{- define "scale.componentName" -}}
{{- printf "%s-%s" (include "scale.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A component's image. Call with (list $ "binary"). */}}
{{- define "scale.image" -}}
{{- $ := index . 0 -}}
{{- printf "%s/scale-%s:%s" $.Values.global.image.registry (index . 1) (default $.Chart.AppVersion $.Values.global.image.tag) }}
{{- end }}

{{/* The Secret with the Postgres URLs and its keys. */}}
{{- define "scale.postgresSecret" -}}
{{- if .Values.cloudnativepg.enabled }}{{ include "scale.componentName" (list . "postgres") }}-app{{ else }}{{ .Values.externalPostgres.existingSecret }}{{ end }}
{{- end }}

{{/* SCALE_POSTGRES_* for a login: "writer", "reader" or "owner". Call with (list $ login). */}}
{{- define "scale.postgresEnv" -}}
{{- $ := index . 0 -}}
{{- $login := index . 1 -}}
{{- $key := $.Values.externalPostgres.urlKey -}}
{{- if eq $login "reader" }}{{ $key = $.Values.externalPostgres.readerUrlKey }}{{ end -}}
{{- if eq $login "owner" }}{{ $key = $.Values.externalPostgres.ownerUrlKey }}{{ end -}}
{{- if $.Values.cloudnativepg.enabled }}{{ $key = "uri" }}{{ end -}}
- name: SCALE_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "scale.postgresSecret" $ }}
      key: {{ $key }}
- name: SCALE_POSTGRES_WAIT
  value: {{ $.Values.externalPostgres.wait | quote }}
{{- if ne $login "reader" }}
- name: SCALE_POSTGRES_MIGRATE
  value: {{ eq $login "owner" | quote }}
{{- end }}
{{- end }}

{{/* SCALE_NATS_* for a service (the key of its URL in externalNats.existingSecret). Call with (list $ service). */}}
{{- define "scale.natsEnv" -}}
{{- $ := index . 0 -}}
{{ include "scale.natsURLEnv" . }}
- name: SCALE_NATS_REPLICAS
  value: {{ $.Values.externalNats.replicas | quote }}
- name: SCALE_NATS_DISCOVER
  value: {{ $.Values.externalNats.discover | quote }}
{{- end }}

{{/* SCALE_NATS_URL for a service: its own user's URL from externalNats.existingSecret, or the URL. Call with (list $ service). */}}
{{- define "scale.natsURLEnv" -}}
{{- $ := index . 0 -}}
{{- if $.Values.externalNats.existingSecret -}}
- name: SCALE_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalNats.existingSecret }}
      key: {{ index . 1 }}
{{- else -}}
- name: SCALE_NATS_URL
  value: {{ $.Values.externalNats.url | quote }}
{{- end }}
{{- end }}

{{/* SCALE_STORAGE_* (object storage). */}}
{{- define "scale.storageEnv" -}}
{{- with .Values.externalS3 }}
- name: SCALE_STORAGE_ENDPOINT
  value: {{ .endpoint | quote }}
- name: SCALE_STORAGE_REGION
  value: {{ .region | quote }}
- name: SCALE_STORAGE_PATH_STYLE
  value: {{ .pathStyle | quote }}
{{- if .existingSecret }}
- name: SCALE_STORAGE_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyKey }}
- name: SCALE_STORAGE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* SCALE_OPS_* and OTEL_* for every service. */}}
{{- define "scale.opsEnv" -}}
- name: SCALE_OPS_ADDR
  value: "0.0.0.0:9090"
- name: SCALE_OPS_LOG_LEVEL
  value: {{ .Values.global.logLevel | quote }}
- name: SCALE_OPS_DRAIN_TIMEOUT
  value: {{ printf "%ds" (max 5 (sub (int .Values.global.terminationGracePeriodSeconds) 10)) | quote }}
{{- with .Values.global.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.Values.global.traceSample | quote }}
{{- end }}
{{- end }}

{{/* A component's own settings as SCALE_<COMPONENT>_<SETTING> (fetchBatch → SCALE_EXTRACT_FETCH_BATCH). Call with (list "component" settings). */}}
{{- define "scale.settingsEnv" -}}
{{- $component := index . 0 -}}
{{- range $name, $value := index . 1 }}
- name: {{ printf "SCALE_%s_%s" $component (snakecase $name) | upper }}
  {{- /* YAML numbers arrive as float64: a whole one is written as an integer, not 6.7108864e+07 */}}
  {{- if and (kindIs "float64" $value) (eq (float64 (int64 $value)) $value) }}
  value: {{ int64 $value | toString | quote }}
  {{- else }}
  value: {{ $value | toString | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The extract consumer's MaxAckPending: set, or the most replicas × concurrency × fetch batch. */}}
{{- define "scale.extractMaxAckPending" -}}
{{- $s := .Values.extract.settings -}}
{{- if gt (int $s.maxAckPending) 0 }}{{ $s.maxAckPending }}{{ else -}}
{{- $replicas := .Values.extract.replicas -}}
{{- if ne .Values.extract.autoscaling.mode "none" }}{{ $replicas = .Values.extract.autoscaling.maxReplicas }}{{ end -}}
{{- mul (int $replicas) (int $s.concurrency) (int $s.fetchBatch) }}
{{- end }}
{{- end }}

{{/* The extract settings with maxAckPending resolved. */}}
{{- define "scale.extractSettings" -}}
{{- $s := deepCopy .Values.extract.settings -}}
{{- $_ := set $s "maxAckPending" (include "scale.extractMaxAckPending" .) -}}
{{- toYaml $s }}
{{- end }}

{{/* A pod template's metadata: the selector labels, the chaos opt-in of the
long-running services the chaos runner may attack, podLabels, podAnnotations.
Call with (list $ component values). */}}
{{- define "scale.podMetadata" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- $v := index . 2 -}}
labels:
  {{- include "scale.selectorLabels" (list $ $component) | nindent 2 }}
  {{- if has $component (list "extract" "similarity" "api") }}
  scale.dev/chaos-target: "true"
  {{- end }}
  {{- with $v.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $v.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level fields every workload shares. Call with (list $ component values). */}}
{{- define "scale.podSpec" -}}
{{- $ := index . 0 -}}
{{- $v := index . 2 -}}
{{- if eq (index . 1) "chaos-runner" }}
serviceAccountName: {{ include "scale.componentName" (list $ "chaos-runner") }}
automountServiceAccountToken: true
{{- else }}
serviceAccountName: {{ include "scale.serviceAccountName" $ }}
automountServiceAccountToken: false
{{- end }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $.Values.global.terminationGracePeriodSeconds }}
{{- with $.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpread }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "scale.selectorLabels" (list $ (index . 1)) | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
{{- end }}
volumes:
  - name: tmp
    emptyDir: {}
{{- end }}

{{/* Container fields every service shares. */}}
{{- define "scale.containerCommon" -}}
imagePullPolicy: {{ .Values.global.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* Probes of a long-running service: liveness never checks a dependency (a NATS or
Postgres outage, our own chaos, must not restart pods); readiness does. */}}
{{- define "scale.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
  failureThreshold: 2
{{- end }}

{{/* A PodDisruptionBudget. Call with (list $ component values). */}}
{{- define "scale.pdb" -}}
{{- $ := index . 0 -}}
{{- $v := index . 2 -}}
{{- if and $v.enabled $v.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "scale.componentName" (list $ (index . 1)) }}
  labels:
    {{- include "scale.labels" (list $ (index . 1)) | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "scale.selectorLabels" (list $ (index . 1)) | nindent 6 }}
{{- end }}
{{- end }}
