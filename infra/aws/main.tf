locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  kinesis = var.stream == "kinesis"
  msk     = var.stream == "msk_serverless"
  kafka   = var.stream == "kafka"
  rds     = var.database == "rds"

  # A VPC is made when something in it is made: the RDS instance or the MSK cluster. The
  # functions join it only for RDS (the mappings reach MSK themselves, through the cluster's
  # subnets); outside it they reach an external database over the internet.
  vpc       = local.rds || local.msk
  lambda_in = local.rds

  roles = toset(["ingest", "http", "rollup", "maintenance"])

  # The handler's settings with the README's defaults; var.settings overrides them. An empty
  # value means "unset" to the handler. Kept in step with the README by scripts/check-infra.
  default_settings = {
    DATABASE_SSLROOTCERT                 = ""
    DB_POOL_SIZE                         = "8"
    REPORT_POOL_SIZE                     = "4"
    REPORT_TIMEOUT_MS                    = "5000"
    REPORT_CONCURRENCY_PER_CREDENTIAL    = "16"
    REPORT_CONCURRENCY_PER_TENANT        = "32"
    DB_CONNECT_TIMEOUT_SECONDS           = "5"
    EVENT_MAX_BYTES                      = "32768"
    DEAD_LETTER_MAX_PAYLOAD_BYTES        = "65536"
    EVENT_MAX_URL_BYTES                  = "2048"
    EVENT_MAX_TEXT_BYTES                 = "256"
    EVENT_FUTURE_SKEW_SECONDS            = "300"
    EVENT_RETENTION_DAYS                 = "30"
    COLLECT_MAX_BODY_BYTES               = "1048576"
    COLLECT_MAX_EVENTS                   = "500"
    COLLECT_EVENTS_PER_SECOND_PER_KEY    = "1000"
    COLLECT_EVENTS_PER_SECOND_PER_TENANT = "2000"
    COLLECT_EVENTS_PER_DAY_PER_KEY       = "50000000"
    COLLECT_EVENTS_PER_DAY_PER_TENANT    = "100000000"
    TENANT_CACHE_TTL_SECONDS             = "30"
    ACCESS_CACHE_TTL_SECONDS             = "10"
    REPORTS_CORS_ORIGINS                 = ""
    EMBED_FRAME_ANCESTORS                = "'self'"
    HSTS_MAX_AGE_SECONDS                 = "31536000"
    RUST_LOG                             = "info"
  }

  # Secrets are given to the functions as Secrets Manager ARNs, resolved at cold start.
  secret_settings = {
    DATABASE_URL       = aws_secretsmanager_secret.database_url.arn
    SHARE_TOKEN_SECRET = aws_secretsmanager_secret.share_token.arn
  }

  # Where collect (in http) publishes, what ingest calls the source of a self-managed Kafka
  # cluster, and whether ingest reports batch item failures: exactly when its mapping has
  # ReportBatchItemFailures (only the Kinesis mapping can), else a failure it reports would
  # be taken for a success of the whole batch.
  stream_settings = merge(
    local.kinesis ? { COLLECT_KINESIS_STREAM = aws_kinesis_stream.events[0].name } : {},
    local.kafka ? { KAFKA_SOURCE_NAME = var.kafka_source_name } : {},
    { REPORT_BATCH_ITEM_FAILURES = tostring(local.kinesis && var.ingest_report_batch_item_failures) },
  )

  environment = {
    for role in local.roles : role => merge(
      local.default_settings,
      var.settings,
      local.stream_settings,
      local.secret_settings,
      { LAMBDA_ROLE = role },
    )
  }
}

# One customer-managed key for what holds data: secrets, the stream, logs, the database,
# the functions' environment and the schedules.
resource "aws_kms_key" "main" {
  description         = "${var.name}: secrets, stream, logs, database"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}

# In a key policy, Resource "*" is the key itself.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:a key policy's Resource "*" means this key only
  #checkov:skip=CKV_AWS_356:a key policy's Resource "*" means this key only
  #checkov:skip=CKV_AWS_109:the account root administers its own key (AWS's default key policy)
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
  statement {
    sid = "CloudWatchLogsEncrypts"
    actions = [
      "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }
}
