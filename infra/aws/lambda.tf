# The `lambda` binary (bootstrap on provided.al2023) as four functions; LAMBDA_ROLE picks
# what each one does.

locals {
  reserved_concurrency = {
    ingest      = var.ingest_reserved_concurrency
    http        = var.http_reserved_concurrency
    rollup      = 1 # runs never overlap; the watermark lock is the guarantee
    maintenance = 1
  }
}

resource "aws_cloudwatch_log_group" "fn" {
  for_each          = local.roles
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_lambda_function" "fn" {
  for_each                       = local.roles
  function_name                  = "${var.name}-${each.key}"
  description                    = "ReMarketable ${each.key} (LAMBDA_ROLE=${each.key})"
  role                           = aws_iam_role.fn[each.key].arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  memory_size                    = var.lambda_memory_mb[each.key]
  timeout                        = var.lambda_timeout_seconds[each.key]
  reserved_concurrent_executions = local.reserved_concurrency[each.key]
  kms_key_arn                    = aws_kms_key.main.arn

  environment {
    variables = local.environment[each.key]
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.fn[each.key].name
  }

  tracing_config {
    mode = "Active"
  }

  dynamic "vpc_config" {
    for_each = local.lambda_in ? [1] : []
    content {
      subnet_ids         = aws_subnet.private[*].id
      security_group_ids = [aws_security_group.lambda[0].id]
    }
  }

  depends_on = [aws_iam_role_policy.fn]
}

# Scheduled jobs are invoked asynchronously: no retries (the next run catches up) and no
# destination.
resource "aws_lambda_function_event_invoke_config" "jobs" {
  for_each                     = toset(["rollup", "maintenance"])
  function_name                = aws_lambda_function.fn[each.key].function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 300
}

# ingest's mapping. Unlimited retries and no on-failure destination: a destination turns
# infinite retries into 10, so a long database outage would move events out of the stream.
# Bad events are dead-lettered by the code; only infrastructure failures fail a batch.
resource "aws_lambda_event_source_mapping" "kinesis" {
  count                              = local.kinesis ? 1 : 0
  function_name                      = aws_lambda_function.fn["ingest"].arn
  event_source_arn                   = aws_kinesis_stream.events[0].arn
  starting_position                  = var.ingest_starting_position
  batch_size                         = var.ingest_batch_size
  maximum_batching_window_in_seconds = var.ingest_batching_window_seconds
  parallelization_factor             = 1 # more would break the per-shard position order
  maximum_retry_attempts             = -1
  maximum_record_age_in_seconds      = -1
  bisect_batch_on_function_error     = false
  function_response_types            = var.ingest_report_batch_item_failures ? ["ReportBatchItemFailures"] : []
}

# Kafka mappings retry a failed batch until the records expire (no retry settings exist
# outside provisioned mode) and have no destination here.
resource "aws_lambda_event_source_mapping" "msk" {
  count                              = local.msk ? 1 : 0
  function_name                      = aws_lambda_function.fn["ingest"].arn
  event_source_arn                   = aws_msk_serverless_cluster.events[0].arn
  topics                             = [var.topic]
  starting_position                  = var.ingest_starting_position
  batch_size                         = var.ingest_batch_size
  maximum_batching_window_in_seconds = var.ingest_batching_window_seconds

  amazon_managed_kafka_event_source_config {
    consumer_group_id = var.kafka_consumer_group
  }
}

resource "aws_lambda_event_source_mapping" "kafka" {
  count                              = local.kafka ? 1 : 0
  function_name                      = aws_lambda_function.fn["ingest"].arn
  topics                             = [var.topic]
  starting_position                  = var.ingest_starting_position
  batch_size                         = var.ingest_batch_size
  maximum_batching_window_in_seconds = var.ingest_batching_window_seconds

  self_managed_event_source {
    endpoints = { KAFKA_BOOTSTRAP_SERVERS = join(",", var.kafka_bootstrap_servers) }
  }

  self_managed_kafka_event_source_config {
    consumer_group_id = var.kafka_consumer_group
  }

  source_access_configuration {
    type = var.kafka_auth
    uri  = var.kafka_secret_arn
  }

  lifecycle {
    precondition {
      condition     = length(var.kafka_bootstrap_servers) > 0 && startswith(var.kafka_secret_arn, "arn:")
      error_message = "stream = kafka needs kafka_bootstrap_servers and kafka_secret_arn."
    }
  }
}
