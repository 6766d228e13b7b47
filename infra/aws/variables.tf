variable "name" {
  description = "Prefix of every resource name (one deployment per name and region)."
  type        = string
  default     = "remarketable"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: lower-case letters, digits and '-', 2 to 31 characters, starting with a letter."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

# --- the stream -------------------------------------------------------------------------------

variable "stream" {
  description = "Where events arrive: msk_serverless (a new MSK Serverless cluster), kafka (an existing Kafka cluster: kafka_bootstrap_servers, kafka_secret_arn) or kinesis (a new Kinesis stream)."
  type        = string
  default     = "msk_serverless"
  validation {
    condition     = contains(["msk_serverless", "kafka", "kinesis"], var.stream)
    error_message = "stream is one of msk_serverless, kafka, kinesis."
  }
}

variable "topic" {
  description = "Kafka topic of the events (msk_serverless and kafka); create it on the cluster before events flow."
  type        = string
  default     = "clickstream"
}

variable "kafka_bootstrap_servers" {
  description = "stream = kafka: the brokers, host:port."
  type        = list(string)
  default     = []
}

variable "kafka_secret_arn" {
  description = "stream = kafka: Secrets Manager secret with the SASL/SCRAM credentials ({\"username\",\"password\"})."
  type        = string
  default     = ""
}

variable "kafka_auth" {
  description = "stream = kafka: source access type of the secret (SASL_SCRAM_512_AUTH, SASL_SCRAM_256_AUTH or BASIC_AUTH)."
  type        = string
  default     = "SASL_SCRAM_512_AUTH"
  validation {
    condition     = contains(["SASL_SCRAM_512_AUTH", "SASL_SCRAM_256_AUTH", "BASIC_AUTH"], var.kafka_auth)
    error_message = "kafka_auth is SASL_SCRAM_512_AUTH, SASL_SCRAM_256_AUTH or BASIC_AUTH."
  }
}

variable "kafka_source_name" {
  description = "stream = kafka: the stable name that identifies the cluster in stored stream positions (the lambda's KAFKA_SOURCE_NAME). Never change it once events are stored."
  type        = string
  default     = "kafka"
}

variable "kafka_consumer_group" {
  description = "Kafka consumer group of the ingest mapping."
  type        = string
  default     = "remarketable-ingest"
}

variable "kinesis_shard_count" {
  description = "stream = kinesis: shards (provisioned mode)."
  type        = number
  default     = 2
}

variable "kinesis_retention_hours" {
  description = "stream = kinesis: how long records stay readable; ingest retries a failing batch until then."
  type        = number
  default     = 168
}

# --- ingest's event source mapping -----------------------------------------------------------

variable "ingest_batch_size" {
  description = "Records per ingest invocation (Kinesis up to 10000, Kafka up to 10000)."
  type        = number
  default     = 1000
}

variable "ingest_batching_window_seconds" {
  description = "How long the mapping gathers records before invoking (0-300)."
  type        = number
  default     = 1
}

variable "ingest_starting_position" {
  description = "Where a new mapping starts reading: TRIM_HORIZON (oldest kept) or LATEST."
  type        = string
  default     = "TRIM_HORIZON"
  validation {
    condition     = contains(["TRIM_HORIZON", "LATEST"], var.ingest_starting_position)
    error_message = "ingest_starting_position is TRIM_HORIZON or LATEST."
  }
}

variable "ingest_report_batch_item_failures" {
  description = "Kinesis: let ingest report the first failed record (ReportBatchItemFailures) instead of failing the whole batch."
  type        = bool
  default     = true
}

# --- the functions ---------------------------------------------------------------------------

variable "lambda_zip" {
  description = "The built lambda binary, packaged as bootstrap in a zip (provided.al2023)."
  type        = string
  default     = "../../target/lambda/bootstrap.zip"
}

variable "lambda_architecture" {
  description = "x86_64 or arm64: must match the binary in lambda_zip."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture is x86_64 or arm64."
  }
}

variable "lambda_memory_mb" {
  description = "Memory of each function, MB."
  type        = map(number)
  default = {
    ingest      = 1024
    http        = 512
    rollup      = 512
    maintenance = 256
  }
}

variable "lambda_timeout_seconds" {
  description = "Timeout of each function, seconds (Kafka sources allow up to 840)."
  type        = map(number)
  default = {
    ingest      = 300
    http        = 30
    rollup      = 300
    maintenance = 300
  }
}

variable "ingest_reserved_concurrency" {
  description = "Reserved concurrency of ingest (null: unreserved). Concurrency follows partitions/shards anyway."
  type        = number
  default     = null
}

variable "http_reserved_concurrency" {
  description = "Reserved concurrency of http (null: unreserved); bounds the database connections the API can open."
  type        = number
  default     = null
}

variable "function_url" {
  description = "Serve http through a Lambda Function URL."
  type        = bool
  default     = true
}

variable "http_api" {
  description = "Serve http through an API Gateway HTTP API ($default stage) as well."
  type        = bool
  default     = false
}

variable "rollup_schedule" {
  description = "EventBridge Scheduler expression of the rollup job."
  type        = string
  default     = "rate(1 minute)"
}

variable "maintenance_schedule" {
  description = "EventBridge Scheduler expression of the maintenance job (UTC)."
  type        = string
  default     = "cron(7 * * * ? *)"
}

variable "log_retention_days" {
  description = "Retention of the functions' CloudWatch log groups, days."
  type        = number
  default     = 30
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "settings" {
  description = "The handler's settings (README: Settings), as environment variables of every function; empty means the default. DATABASE_URL and SHARE_TOKEN_SECRET are not here: they come from Secrets Manager."
  type        = map(string)
  default     = {}
  validation {
    condition     = length(setintersection(keys(var.settings), ["DATABASE_URL", "SHARE_TOKEN_SECRET"])) == 0
    error_message = "settings must not hold DATABASE_URL or SHARE_TOKEN_SECRET: they are secrets (database_url, share_token_secret)."
  }
}

# --- the database and the secrets --------------------------------------------------------------

variable "database" {
  description = "rds: a new RDS PostgreSQL instance (single node, hll and pg_cron allow-listed); external: an existing cluster (e.g. Citus) given by database_url."
  type        = string
  default     = "rds"
  validation {
    condition     = contains(["rds", "external"], var.database)
    error_message = "database is rds or external."
  }
}

variable "database_url" {
  description = "database = external: postgres://user:password@host:port/db?sslmode=verify-full. Stored only in Secrets Manager."
  type        = string
  default     = ""
  sensitive   = true
}

variable "rds_instance_class" {
  description = "database = rds: instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "rds_engine_version" {
  description = "database = rds: PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "rds_allocated_storage_gb" {
  description = "database = rds: initial storage, GB (grows up to 4x)."
  type        = number
  default     = 100
}

variable "rds_multi_az" {
  description = "database = rds: a standby in a second availability zone."
  type        = bool
  default     = false
}

variable "rds_deletion_protection" {
  description = "database = rds: refuse to delete the instance (set false before terraform destroy)."
  type        = bool
  default     = true
}

variable "rds_skip_final_snapshot" {
  description = "database = rds: delete without a final snapshot (only for throw-away deployments)."
  type        = bool
  default     = false
}

variable "share_token_secret" {
  description = "SHARE_TOKEN_SECRET (at least 32 bytes); empty: a random one is generated once. Stored only in Secrets Manager."
  type        = string
  default     = ""
  sensitive   = true
  validation {
    condition     = var.share_token_secret == "" || length(var.share_token_secret) >= 32
    error_message = "share_token_secret must be at least 32 bytes (e.g. openssl rand -base64 48)."
  }
}

variable "secret_recovery_days" {
  description = "Days a deleted secret can be restored (0: delete at once, 7-30)."
  type        = number
  default     = 30
}

variable "availability_zones" {
  description = "The two availability zones of the private subnets (default: <region>a and <region>b)."
  type        = list(string)
  default     = []
  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 2
    error_message = "availability_zones names two zones (or none for the default)."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC made for RDS and MSK (two private subnets are carved from it)."
  type        = string
  default     = "10.42.0.0/16"
}
