# The deployment's promises, checked on a mocked AWS (no credentials, no network):
# `terraform test` in infra/aws (scripts/check-infra runs it). Each file has its own state.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  # Any existing file: the mocked provider never reads the zip.
  lambda_zip         = "versions.tf"
  stream             = "kinesis"
  database           = "external"
  database_url       = "postgres://app:SENTINEL-DB-PASSWORD@db.example.com:5432/remarketable?sslmode=verify-full"
  share_token_secret = "SENTINEL-SHARE-TOKEN-SECRET-0123456789abcdef"
}

run "kinesis_ingest_mapping_never_gives_up" {
  assert {
    condition     = aws_lambda_event_source_mapping.kinesis[0].maximum_retry_attempts == -1
    error_message = "ingest must retry a failing batch without limit"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.kinesis[0].maximum_record_age_in_seconds == -1
    error_message = "ingest must not skip old records"
  }
  assert {
    condition     = length(aws_lambda_event_source_mapping.kinesis[0].destination_config) == 0
    error_message = "ingest must have no on-failure destination (it turns infinite retries into 10)"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.kinesis[0].parallelization_factor == 1
    error_message = "parallelization factor must be 1: positions are per shard"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.kinesis[0].bisect_batch_on_function_error == false
    error_message = "bisecting would reorder a shard"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.kinesis[0].starting_position == "TRIM_HORIZON"
    error_message = "a new mapping starts at the oldest record"
  }
  assert {
    condition     = toset(aws_lambda_event_source_mapping.kinesis[0].function_response_types) == toset(["ReportBatchItemFailures"])
    error_message = "ReportBatchItemFailures is on by default"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.kinesis[0].function_name == aws_lambda_function.fn["ingest"].arn
    error_message = "the mapping feeds the ingest function"
  }
  assert {
    condition     = length(aws_lambda_event_source_mapping.msk) == 0 && length(aws_lambda_event_source_mapping.kafka) == 0
    error_message = "one mapping only"
  }
}

run "scheduled_jobs_run_alone_and_once" {
  assert {
    condition     = alltrue([for job in ["rollup", "maintenance"] : aws_lambda_function.fn[job].reserved_concurrent_executions == 1])
    error_message = "rollup and maintenance have reserved concurrency 1"
  }
  assert {
    condition     = alltrue([for job in ["rollup", "maintenance"] : aws_lambda_function_event_invoke_config.jobs[job].maximum_retry_attempts == 0])
    error_message = "scheduled jobs are not retried asynchronously"
  }
  assert {
    condition     = alltrue([for job in ["rollup", "maintenance"] : length(aws_lambda_function_event_invoke_config.jobs[job].destination_config) == 0])
    error_message = "scheduled jobs have no async destination"
  }
  assert {
    condition     = alltrue([for job in ["rollup", "maintenance"] : aws_scheduler_schedule.job[job].target[0].retry_policy[0].maximum_retry_attempts == 0])
    error_message = "the scheduler does not retry either"
  }
  assert {
    condition     = alltrue([for job in ["rollup", "maintenance"] : jsondecode(aws_scheduler_schedule.job[job].target[0].input).job == job])
    error_message = "each schedule sends an explicit input naming its job"
  }
  assert {
    condition     = alltrue([for job in ["rollup", "maintenance"] : aws_scheduler_schedule.job[job].target[0].arn == aws_lambda_function.fn[job].arn])
    error_message = "each schedule invokes its own function"
  }
}

run "no_secret_in_plain_environment" {
  assert {
    condition = alltrue(flatten([
      for fn in aws_lambda_function.fn : [
        for name, value in fn.environment[0].variables : !strcontains(value, "SENTINEL")
      ]
    ]))
    error_message = "a secret reached a function's environment in plain text"
  }
  assert {
    condition = alltrue([
      for fn in aws_lambda_function.fn :
      fn.environment[0].variables["DATABASE_URL"] == aws_secretsmanager_secret.database_url.arn &&
      fn.environment[0].variables["SHARE_TOKEN_SECRET"] == aws_secretsmanager_secret.share_token.arn
    ])
    error_message = "DATABASE_URL and SHARE_TOKEN_SECRET are Secrets Manager ARNs"
  }
  assert {
    condition     = strcontains(aws_secretsmanager_secret_version.database_url.secret_string, "SENTINEL-DB-PASSWORD")
    error_message = "the database URL is stored in Secrets Manager"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.share_token.secret_string == var.share_token_secret
    error_message = "a supplied share token secret is stored in Secrets Manager"
  }
  assert {
    condition     = alltrue([for role, fn in aws_lambda_function.fn : fn.environment[0].variables["LAMBDA_ROLE"] == role])
    error_message = "each function's LAMBDA_ROLE is its role"
  }
  assert {
    condition     = aws_lambda_function.fn["http"].environment[0].variables["COLLECT_KINESIS_STREAM"] == aws_kinesis_stream.events[0].name
    error_message = "collect publishes to the deployment's stream"
  }
  assert {
    condition     = aws_lambda_function.fn["ingest"].environment[0].variables["REPORT_BATCH_ITEM_FAILURES"] == "true" && contains(aws_lambda_event_source_mapping.kinesis[0].function_response_types, "ReportBatchItemFailures")
    error_message = "ingest reports batch item failures, as its mapping expects"
  }
}

run "function_url_is_open_and_http_api_is_optional" {
  assert {
    condition     = aws_lambda_function_url.http[0].authorization_type == "NONE"
    error_message = "the API authenticates its own bearer credentials: the URL is open"
  }
  assert {
    condition     = aws_lambda_permission.function_url[0].action == "lambda:InvokeFunctionUrl" && aws_lambda_permission.function_url[0].function_url_auth_type == "NONE" && aws_lambda_permission.function_url[0].principal == "*"
    error_message = "an open function URL needs its public invoke permission"
  }
  assert {
    condition     = length(aws_apigatewayv2_api.http) == 0
    error_message = "no HTTP API unless asked for"
  }
  assert {
    condition     = output.dashboard_url == "https://mocked.lambda-url.eu-west-1.on.aws/api/dashboard/"
    error_message = "the dashboard URL is the function URL's /api/dashboard/"
  }
}

run "log_groups_keep_logs_for_the_retention" {
  variables {
    log_retention_days = 14
  }
  assert {
    condition     = alltrue([for g in aws_cloudwatch_log_group.fn : g.retention_in_days == 14])
    error_message = "every function's log group has the retention"
  }
  assert {
    condition     = alltrue([for role, fn in aws_lambda_function.fn : fn.logging_config[0].log_group == aws_cloudwatch_log_group.fn[role].name])
    error_message = "every function logs to its own group"
  }
}

run "default_retention_is_30_days" {
  assert {
    condition     = alltrue([for g in aws_cloudwatch_log_group.fn : g.retention_in_days == 30])
    error_message = "default retention is 30 days"
  }
}

run "batch_item_failures_can_be_off" {
  variables {
    ingest_report_batch_item_failures = false
  }
  assert {
    condition     = length(aws_lambda_event_source_mapping.kinesis[0].function_response_types) == 0
    error_message = "without ReportBatchItemFailures a failure fails the whole batch"
  }
  assert {
    condition     = aws_lambda_function.fn["ingest"].environment[0].variables["REPORT_BATCH_ITEM_FAILURES"] == "false"
    error_message = "ingest does not report batch item failures its mapping would not read"
  }
}

run "http_api_default_stage" {
  variables {
    function_url = false
    http_api     = true
  }
  assert {
    condition     = aws_apigatewayv2_stage.http[0].name == "$default" && aws_apigatewayv2_route.http[0].route_key == "$default"
    error_message = "the HTTP API uses the $default stage and route (no stage prefix in paths)"
  }
  assert {
    condition     = aws_apigatewayv2_integration.http[0].payload_format_version == "2.0"
    error_message = "payload v2, as lambda_http expects"
  }
  assert {
    condition     = length(aws_lambda_function_url.http) == 0
    error_message = "no function URL when switched off"
  }
  assert {
    condition     = !strcontains(aws_apigatewayv2_stage.http[0].access_log_settings[0].format, "$context.routeKey") && strcontains(aws_apigatewayv2_stage.http[0].access_log_settings[0].format, "$context.path")
    error_message = "access logs carry the path, not query strings"
  }
}

run "settings_override_defaults" {
  variables {
    settings = { DB_POOL_SIZE = "4", REPORTS_CORS_ORIGINS = "https://app.example.com" }
  }
  assert {
    condition     = aws_lambda_function.fn["http"].environment[0].variables["DB_POOL_SIZE"] == "4" && aws_lambda_function.fn["ingest"].environment[0].variables["EVENT_MAX_BYTES"] == "32768"
    error_message = "settings override the README defaults, the rest keep them"
  }
}

run "secrets_are_refused_in_settings" {
  variables {
    settings = { DATABASE_URL = "postgres://u:p@h/db" }
  }
  command         = plan
  expect_failures = [var.settings]
}

run "external_database_needs_a_url" {
  variables {
    database_url = ""
  }
  command         = plan
  expect_failures = [aws_secretsmanager_secret_version.database_url]
}
