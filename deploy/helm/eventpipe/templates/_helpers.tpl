{{/*
Names, labels and the pieces every pod of the chart shares. Templates pass a dict
("root": ., "component": "api", ...) where a helper needs more than the root context.
*/}}

{{- define "eventpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name alone when it already contains the chart name. */}}
{{- define "eventpipe.fullname" -}}
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

{{/* The name of one component's resources: "<fullname>-api". */}}
{{- define "eventpipe.componentName" -}}
{{- printf "%s-%s" (include "eventpipe.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "eventpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels of every resource. */}}
{{- define "eventpipe.labels" -}}
helm.sh/chart: {{ include "eventpipe.chart" . }}
app.kubernetes.io/name: {{ include "eventpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventpipe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The standard labels plus app.kubernetes.io/component. */}}
{{- define "eventpipe.componentLabels" -}}
{{ include "eventpipe.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The labels that select one component's pods; they never change between releases. */}}
{{- define "eventpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventpipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "eventpipe.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "eventpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventpipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of the migration pod, which runs before the chart's own exists. */}}
{{- define "eventpipe.migrationServiceAccountName" -}}
{{- if .Values.migration.serviceAccountName }}
{{- .Values.migration.serviceAccountName }}
{{- else if .Values.serviceAccount.create }}
{{- printf "%s-migrate" (include "eventpipe.fullname" .) }}
{{- else }}
{{- include "eventpipe.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* EVENTPIPE_PUBLIC_URL: the value given, else https://<ingress host> when TLS is on. */}}
{{- define "eventpipe.publicUrl" -}}
{{- if .Values.config.publicUrl }}
{{- .Values.config.publicUrl }}
{{- else if and .Values.api.ingress.enabled .Values.api.ingress.tls.enabled .Values.api.ingress.host }}
{{- printf "https://%s" .Values.api.ingress.host }}
{{- end }}
{{- end }}

{{/*
The refusals that hold for every release, all missing settings named in one message. Every
template that could fail first includes it (helm stops at the first template that fails).
*/}}
{{- define "eventpipe.validate" -}}
{{- $v := .Values }}
{{- $missing := list }}
{{- if not $v.config.kafkaBootstrap }}
{{- $missing = append $missing "config.kafkaBootstrap is required: host:port[,host:port...] of the Kafka bootstrap (see values-strimzi.yaml or values-managed.yaml)" }}
{{- end }}
{{- if not (or $v.redis.url $v.redis.existingSecret $v.redis.host $v.existingSecret) }}
{{- $missing = append $missing "Redis: set redis.url, redis.existingSecret, redis.host or existingSecret" }}
{{- end }}
{{- if not (or $v.database.url $v.database.existingSecret $v.existingSecret) }}
{{- $missing = append $missing "PostgreSQL: set database.url, database.existingSecret or existingSecret" }}
{{- end }}
{{- if not (or $v.jwt.privateKey $v.jwt.existingSecret $v.existingSecret) }}
{{- $missing = append $missing "JWT: set jwt.privateKey, jwt.existingSecret or existingSecret" }}
{{- end }}
{{- if not $v.jwt.activeKid }}
{{- $missing = append $missing "jwt.activeKid is required: the key id of the JWT signing key" }}
{{- end }}
{{- if and $v.api.ingress.enabled (not $v.api.ingress.host) }}
{{- $missing = append $missing "api.ingress.host is required while api.ingress.enabled is true" }}
{{- end }}
{{- $owned := include "eventpipe.chartConfigData" . | fromYaml }}
{{- range $name, $_ := $v.config.extra }}
{{- if has $name (list "EVENTPIPE_REDIS_URL" "EVENTPIPE_DATABASE_URL" "EVENTPIPE_JWT_PRIVATE_KEY" "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY") }}
{{- $missing = append $missing (printf "config.extra.%s is a secret: set it through redis, database, jwt or exports.s3 (it would land in a ConfigMap)" $name) }}
{{- else if hasKey $owned $name }}
{{- $missing = append $missing (printf "config.extra.%s is set by the chart itself: use the value of values.yaml that sets it" $name) }}
{{- end }}
{{- end }}
{{- $missing = concat $missing (include "eventpipe.validateExports" . | fromYamlArray) }}
{{- $grace := int $v.worker.shutdownGraceSeconds }}
{{- /* Unset, the pod gets Kubernetes' default grace period, 30 s. */}}
{{- $kill := int (default 30 $v.worker.terminationGracePeriodSeconds) }}
{{- if ge $grace $kill }}
{{- $missing = append $missing (printf "worker.shutdownGraceSeconds (%d) must be below worker.terminationGracePeriodSeconds (%d): after its grace the worker needs time to hand the jobs still running back to the queue before the kubelet's SIGKILL" $grace $kill) }}
{{- end }}
{{- if $missing }}
{{- fail (printf "\n- %s" (join "\n- " $missing)) }}
{{- end }}
{{- include "eventpipe.validateProcessorReplicas" . }}
{{- end }}

{{/*
What the export storage needs, as a YAML list of messages (empty when all is well). The api
serves the files the worker writes, so both must reach the same storage.
*/}}
{{- define "eventpipe.validateExports" -}}
{{- $exports := .Values.exports }}
{{- $s3 := $exports.s3 }}
{{- $missing := list }}
{{- if not (or $s3.bucket $exports.persistence.enabled) }}
{{- $missing = append $missing "exports: set exports.persistence.enabled (a volume the api and the worker share) or exports.s3.bucket; the api serves the files the worker writes" }}
{{- end }}
{{- if $s3.bucket }}
{{- $secret := or $s3.secretAccessKey $s3.existingSecret }}
{{- if and $s3.accessKeyId (not (or $secret .Values.existingSecret)) }}
{{- $missing = append $missing "exports.s3.accessKeyId is set: give its secret as exports.s3.secretAccessKey, exports.s3.existingSecret or in existingSecret (key EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY)" }}
{{- end }}
{{- if and $secret (not $s3.accessKeyId) }}
{{- $missing = append $missing "exports.s3.secretAccessKey or exports.s3.existingSecret is set without exports.s3.accessKeyId: give both, or neither for the pods' own identity" }}
{{- end }}
{{- end }}
{{- toYaml $missing }}
{{- end }}

{{/*
A consumer group gives each partition to one member only: processors beyond the partition
count of the events topic would sit idle, so no setting may ask for more.
*/}}
{{- define "eventpipe.validateProcessorReplicas" -}}
{{- $partitions := int .Values.config.partitions }}
{{- $p := .Values.processor }}
{{- if and $p.autoscaling.enabled $p.keda.enabled }}
{{- fail "processor.autoscaling and processor.keda are both enabled: KEDA makes its own HPA, turn one off" }}
{{- end }}
{{- if gt (int $p.replicaCount) $partitions }}
{{- fail (printf "processor.replicaCount (%d) is above config.partitions (%d): a consumer group never uses more processors than partitions" (int $p.replicaCount) $partitions) }}
{{- end }}
{{- if and $p.autoscaling.enabled (gt (int $p.autoscaling.maxReplicas) $partitions) }}
{{- fail (printf "processor.autoscaling.maxReplicas (%d) is above config.partitions (%d): a consumer group never uses more processors than partitions" (int $p.autoscaling.maxReplicas) $partitions) }}
{{- end }}
{{- if and $p.keda.enabled (gt (int $p.keda.maxReplicaCount) $partitions) }}
{{- fail (printf "processor.keda.maxReplicaCount (%d) is above config.partitions (%d): a consumer group never uses more processors than partitions" (int $p.keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- end }}

{{/* The non-secret settings: the data of the ConfigMaps. */}}
{{- define "eventpipe.configData" -}}
{{ include "eventpipe.chartConfigData" . }}
{{- range $name, $value := .Values.config.extra }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The settings the chart sets from its own values (config.extra may not repeat them). */}}
{{- define "eventpipe.chartConfigData" -}}
EVENTPIPE_ENVIRONMENT: {{ .Values.config.environment | quote }}
EVENTPIPE_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
EVENTPIPE_KAFKA_BOOTSTRAP: {{ .Values.config.kafkaBootstrap | quote }}
EVENTPIPE_PARTITIONS: {{ .Values.config.partitions | toString | quote }}
EVENTPIPE_EVENTS_TOPIC: {{ .Values.config.eventsTopic | quote }}
EVENTPIPE_DLQ_TOPIC: {{ .Values.config.dlqTopic | quote }}
EVENTPIPE_PROCESSOR_GROUP: {{ .Values.config.processorGroup | quote }}
EVENTPIPE_JWT_ACTIVE_KID: {{ .Values.jwt.activeKid | quote }}
EVENTPIPE_HTTP_HOST: "0.0.0.0"
EVENTPIPE_HTTP_PORT: {{ .Values.api.port | toString | quote }}
EVENTPIPE_PROCESSOR_METRICS_PORT: {{ .Values.processor.metricsPort | toString | quote }}
EVENTPIPE_WORKER_METRICS_PORT: {{ .Values.worker.metricsPort | toString | quote }}
EVENTPIPE_STATE_DIR: "/tmp/eventpipe/state"
EVENTPIPE_CACHE_DIR: "/tmp/eventpipe/cache"
{{- with .Values.config.trustedProxies }}
EVENTPIPE_TRUSTED_PROXIES: {{ join "," . | quote }}
{{- end }}
{{- with include "eventpipe.publicUrl" . }}
EVENTPIPE_PUBLIC_URL: {{ . | quote }}
{{- end }}
EVENTPIPE_WORKER_SHUTDOWN_GRACE_S: {{ .Values.worker.shutdownGraceSeconds | toString | quote }}
{{- /* The volume's mount point; with S3, where the worker spools a file before its upload. */}}
EVENTPIPE_EXPORT_DIR: {{ include "eventpipe.exportsPath" . | quote }}
{{- with .Values.exports.s3 }}
{{- if .bucket }}
EVENTPIPE_EXPORT_S3_BUCKET: {{ .bucket | quote }}
EVENTPIPE_EXPORT_S3_PREFIX: {{ .prefix | quote }}
{{- with .endpointUrl }}
EVENTPIPE_EXPORT_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .region }}
EVENTPIPE_EXPORT_S3_REGION: {{ . | quote }}
{{- end }}
{{- with .accessKeyId }}
EVENTPIPE_EXPORT_S3_ACCESS_KEY_ID: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The secrets given inline: the data of the chart's own Secrets (empty when none is). */}}
{{- define "eventpipe.secretData" -}}
{{- $v := .Values }}
{{- if and (not $v.redis.existingSecret) $v.redis.url }}
EVENTPIPE_REDIS_URL: {{ $v.redis.url | b64enc | quote }}
{{- end }}
{{- if and (not $v.database.existingSecret) $v.database.url }}
EVENTPIPE_DATABASE_URL: {{ $v.database.url | b64enc | quote }}
{{- end }}
{{- if and (not $v.jwt.existingSecret) $v.jwt.privateKey }}
EVENTPIPE_JWT_PRIVATE_KEY: {{ $v.jwt.privateKey | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
The S3 secret key given inline: in the release's Secret only (the migration never needs it).
*/}}
{{- define "eventpipe.exportsSecretData" -}}
{{- $s3 := .Values.exports.s3 }}
{{- if and $s3.bucket $s3.secretAccessKey (not $s3.existingSecret) }}
EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY: {{ $s3.secretAccessKey | b64enc | quote }}
{{- end }}
{{- end }}

{{/* One environment variable read from a Secret. */}}
{{- define "eventpipe.secretKeyRef" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ .key | quote }}
{{- end }}

{{/*
The secret settings as environment variables, each from the first source given: its own
existing Secret, its inline value (in the chart's Secret named .secret), parts (Redis only),
the top-level existingSecret. None given: the release is refused.
*/}}
{{- define "eventpipe.secretEnv" -}}
{{- $v := .root.Values }}
{{- $own := .secret }}
{{- if $v.redis.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_REDIS_URL" "name" $v.redis.existingSecret "key" $v.redis.existingSecretKey) }}
{{- else if $v.redis.url }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_REDIS_URL" "name" $own "key" "EVENTPIPE_REDIS_URL") }}
{{- else if $v.redis.host }}
{{- $auth := "" }}
{{- if $v.redis.passwordSecret.name }}
{{ include "eventpipe.secretKeyRef" (dict "env" "REDIS_PASSWORD" "name" $v.redis.passwordSecret.name "key" $v.redis.passwordSecret.key) }}
{{- /* Kubernetes expands $(REDIS_PASSWORD), defined just above, inside the value below. */}}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $v.redis.username }}
{{- end }}
- name: EVENTPIPE_REDIS_URL
  value: {{ printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $v.redis.tls) $auth $v.redis.host (int $v.redis.port) (int $v.redis.db) | quote }}
{{- else if $v.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_REDIS_URL" "name" $v.existingSecret "key" "EVENTPIPE_REDIS_URL") }}
{{- else }}
{{- fail "Redis: set redis.url, redis.existingSecret, redis.host or existingSecret" }}
{{- end }}
{{- if $v.database.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_DATABASE_URL" "name" $v.database.existingSecret "key" $v.database.existingSecretKey) }}
{{- else if $v.database.url }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_DATABASE_URL" "name" $own "key" "EVENTPIPE_DATABASE_URL") }}
{{- else if $v.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_DATABASE_URL" "name" $v.existingSecret "key" "EVENTPIPE_DATABASE_URL") }}
{{- else }}
{{- fail "PostgreSQL: set database.url, database.existingSecret or existingSecret" }}
{{- end }}
{{- if $v.jwt.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_JWT_PRIVATE_KEY" "name" $v.jwt.existingSecret "key" $v.jwt.existingSecretKey) }}
{{- else if $v.jwt.privateKey }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_JWT_PRIVATE_KEY" "name" $own "key" "EVENTPIPE_JWT_PRIVATE_KEY") }}
{{- else if $v.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_JWT_PRIVATE_KEY" "name" $v.existingSecret "key" "EVENTPIPE_JWT_PRIVATE_KEY") }}
{{- else }}
{{- fail "JWT: set jwt.privateKey, jwt.existingSecret or existingSecret" }}
{{- end }}
{{- end }}

{{/*
EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY for the roles that reach the bucket (api, worker), from
its own existing Secret, the chart's Secret (named .secret), or the top-level existingSecret
when an access key id is given. None: boto3's own chain (a pod identity).
*/}}
{{- define "eventpipe.exportsSecretEnv" -}}
{{- $v := .root.Values }}
{{- $s3 := $v.exports.s3 }}
{{- if $s3.bucket }}
{{- if $s3.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY" "name" $s3.existingSecret "key" $s3.existingSecretKey) }}
{{- else if $s3.secretAccessKey }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY" "name" .secret "key" "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY") }}
{{- else if and $s3.accessKeyId $v.existingSecret }}
{{ include "eventpipe.secretKeyRef" (dict "env" "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY" "name" $v.existingSecret "key" "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY") }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the export files are, in every container (the image's EVENTPIPE_EXPORT_DIR). */}}
{{- define "eventpipe.exportsPath" -}}
/var/lib/eventpipe-exports
{{- end }}

{{/* The claim of the export files: an existing one, or the chart's. */}}
{{- define "eventpipe.exportsClaimName" -}}
{{- default (printf "%s-exports" (include "eventpipe.fullname" .)) .Values.exports.persistence.existingClaim }}
{{- end }}

{{/*
The export volume of a component (pass root and component): "claim" for the api and the worker
when the files are on a volume; "spool" for the worker with S3 (a scratch emptyDir the file is
written to before its upload; the api streams nothing from S3, it redirects); "" otherwise.
*/}}
{{- define "eventpipe.exportsVolume" -}}
{{- $exports := .root.Values.exports }}
{{- if $exports.s3.bucket }}
{{- if eq .component "worker" }}spool{{ end }}
{{- else if and $exports.persistence.enabled (has .component (list "api" "worker")) }}claim
{{- end }}
{{- end }}

{{/* Pod template annotations: a changed setting or inline secret rolls the pods. */}}
{{- define "eventpipe.checksumAnnotations" -}}
checksum/config: {{ include "eventpipe.configData" . | sha256sum }}
checksum/secret: {{ printf "%s%s" (include "eventpipe.secretData" .) (include "eventpipe.exportsSecretData" .) | sha256sum }}
{{- end }}

{{/*
The container every role runs: the shared image, settings, security context, /tmp and
resources. Pass root, values (the component's), args, configMap and secret (names), and
optionally ports (a list of container ports, as YAML) and probes (as YAML).
*/}}
{{- define "eventpipe.container" -}}
{{- $root := .root }}
{{- $component := .name }}
- name: {{ .name }}
  image: {{ include "eventpipe.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["eventpipe"]
  args: {{ toJson .args }}
  {{- with .ports }}
  ports:
    {{- . | nindent 4 }}
  {{- end }}
  envFrom:
    - configMapRef:
        name: {{ .configMap | quote }}
  env:
    {{- include "eventpipe.secretEnv" (dict "root" $root "secret" .secret) | trim | nindent 4 }}
    {{- if has .name (list "api" "worker") }}
    {{- with include "eventpipe.exportsSecretEnv" (dict "root" $root "secret" .secret) | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- end }}
    {{- with .values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .probes }}
  {{- . | trim | nindent 2 }}
  {{- end }}
  {{- if gt (int (default 0 .values.preStopSleepSeconds)) 0 }}
  lifecycle:
    preStop:
      exec:
        # `sleep` of the image: the native sleep action needs Kubernetes 1.30.
        command: ["sleep", {{ .values.preStopSleepSeconds | toString | quote }}]
  {{- end }}
  resources:
    {{- toYaml .values.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if include "eventpipe.exportsVolume" (dict "root" $root "component" $component) }}
    - name: exports
      mountPath: {{ include "eventpipe.exportsPath" $root }}
      {{- if eq $component "api" }}
      # The api only reads the files (to stream them); the worker writes them.
      readOnly: true
      {{- end }}
    {{- end }}
{{- end }}

{{/* Startup and liveness on /healthz, readiness on /readyz, all on the named port. */}}
{{- define "eventpipe.probes" -}}
{{- $port := .port }}
{{- range $kind, $path := dict "startup" "/healthz" "liveness" "/healthz" "readiness" "/readyz" }}
{{- $probe := get $.probes $kind }}
{{ $kind }}Probe:
  httpGet:
    path: {{ $path }}
    port: {{ $port }}
  periodSeconds: {{ $probe.periodSeconds }}
  timeoutSeconds: {{ $probe.timeoutSeconds }}
  failureThreshold: {{ $probe.failureThreshold }}
{{- end }}
{{- end }}

{{/*
The pod spec fields every role shares. Pass root, component and values, and optionally
serviceAccountName. Only pods of a Deployment (values with a replicaCount) are spread.
*/}}
{{- define "eventpipe.podCommon" -}}
{{- $root := .root }}
serviceAccountName: {{ default (include "eventpipe.serviceAccountName" $root) .serviceAccountName }}
# None of the roles calls the Kubernetes API: no token in the pods.
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .values.terminationGracePeriodSeconds }}
terminationGracePeriodSeconds: {{ . }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.replicaCount }}
{{- include "eventpipe.topologySpread" . }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $root.Values.tmpSizeLimit }}
  {{- $exports := include "eventpipe.exportsVolume" . }}
  {{- if eq $exports "claim" }}
  - name: exports
    persistentVolumeClaim:
      claimName: {{ include "eventpipe.exportsClaimName" $root }}
  {{- else if eq $exports "spool" }}
  # A whole export file waits here until its upload completes: size it for the largest export.
  - name: exports
    emptyDir:
      sizeLimit: {{ $root.Values.exports.s3.spoolSizeLimit }}
  {{- end }}
{{- end }}

{{- define "eventpipe.topologySpread" -}}
{{- $spread := .root.Values.topologySpread }}
{{- $selector := include "eventpipe.selectorLabels" . }}
{{- if or $spread.zone.enabled $spread.hostname.enabled }}
topologySpreadConstraints:
{{- range $key, $topology := dict "zone" "topology.kubernetes.io/zone" "hostname" "kubernetes.io/hostname" }}
{{- $rule := get $spread $key }}
{{- if $rule.enabled }}
  - topologyKey: {{ $topology }}
    maxSkew: {{ $rule.maxSkew }}
    whenUnsatisfiable: {{ $rule.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- $selector | nindent 8 }}
    # Count only the pods of the same ReplicaSet, so a rollout is not skewed by the old one.
    matchLabelKeys:
      - pod-template-hash
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Egress every role needs: DNS, Kafka, Redis and PostgreSQL (and any extra rules). */}}
{{- define "eventpipe.networkPolicyEgress" -}}
{{- $egress := .Values.networkPolicy.egress }}
egress:
  - ports:
      {{- range $egress.dnsPorts }}
      - protocol: UDP
        port: {{ . }}
      - protocol: TCP
        port: {{ . }}
      {{- end }}
  {{- range $name := list "kafka" "redis" "postgresql" }}
  {{- $rule := get $egress $name }}
  - ports:
      {{- range $rule.ports }}
      - protocol: TCP
        port: {{ . }}
      {{- end }}
    {{- with $rule.to }}
    to:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- end }}
  {{- with $egress.extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The worker's egress to webhook receivers, which are customers' URLs anywhere on the internet:
the allowed ports to every address except the private, loopback, link-local (the cloud metadata
service) and shared (CGNAT) ranges, where a webhook must never lead. The worker refuses those
addresses itself too, unless EVENTPIPE_WEBHOOK_ALLOW_PRIVATE: this holds even if that check fails.
*/}}
{{- define "eventpipe.networkPolicyWebhooksEgress" -}}
{{- $webhooks := .Values.networkPolicy.egress.webhooks }}
{{- if $webhooks.enabled }}
- ports:
    {{- range $webhooks.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  to:
    {{- include "eventpipe.internetPeers" . | trim | nindent 4 }}
{{- end }}
{{- end }}

{{/* networkPolicy.egress.webhooks.ipBlocks as NetworkPolicy peers. */}}
{{- define "eventpipe.internetPeers" -}}
{{- range .Values.networkPolicy.egress.webhooks.ipBlocks }}
- ipBlock:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{/*
Egress to the S3 endpoint when exports go to a bucket (pass root and component). The worker
uploads; the api never calls S3 for a download (a presigned URL is computed locally), but with
no access key given boto3 first fetches the pod's own credentials (IRSA: STS, on 443), so then
it gets the rule too. Peers: networkPolicy.egress.s3.to, else the webhooks' internet ranges.
*/}}
{{- define "eventpipe.networkPolicyS3Egress" -}}
{{- $v := .root.Values }}
{{- $s3 := $v.exports.s3 }}
{{- if and $s3.bucket (or (eq .component "worker") (not $s3.accessKeyId)) }}
- ports:
    {{- range include "eventpipe.s3Ports" .root | fromJsonArray }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  to:
    {{- if $v.networkPolicy.egress.s3.to }}
    {{- toYaml $v.networkPolicy.egress.s3.to | nindent 4 }}
    {{- else }}
    {{- include "eventpipe.internetPeers" .root | trim | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}

{{/*
The S3 endpoint's ports, as a JSON list: networkPolicy.egress.s3.ports, else the port of
exports.s3.endpointUrl (written, or 80 for http), else 443.
*/}}
{{- define "eventpipe.s3Ports" -}}
{{- $ports := .Values.networkPolicy.egress.s3.ports }}
{{- if not $ports }}
{{- $port := 443 }}
{{- with .Values.exports.s3.endpointUrl }}
{{- $url := urlParse . }}
{{- $written := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $written }}
{{- $port = int $written }}
{{- else if eq $url.scheme "http" }}
{{- $port = 80 }}
{{- end }}
{{- end }}
{{- $ports = list $port }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{/* The ingress rule of a metrics port (processor, worker). */}}
{{- define "eventpipe.networkPolicyMetricsIngress" -}}
ingress:
  - ports:
      - protocol: TCP
        port: {{ .port }}
    {{- with .root.Values.networkPolicy.metrics.from }}
    from:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}

{{/*
The migration runs as a pre-install/pre-upgrade hook, before the release's own resources exist
on a first install: it gets its own ConfigMap, Secret and ServiceAccount as hooks of lower
weight. Helm deletes those three when the hooks end, succeeded or failed, and the Job once it
has succeeded (a failed one stays for its logs, and is replaced by the next attempt).
*/}}
{{- define "eventpipe.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
