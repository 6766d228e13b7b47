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

run "msk_serverless_with_rds" {
  variables {
    stream       = "msk_serverless"
    database     = "rds"
    database_url = ""
  }
  assert {
    condition     = length(aws_lambda_event_source_mapping.msk[0].destination_config) == 0
    error_message = "the MSK mapping has no on-failure destination"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.msk[0].topics == toset(["clickstream"])
    error_message = "the MSK mapping reads the topic"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.msk[0].event_source_arn == aws_msk_serverless_cluster.events[0].arn
    error_message = "the MSK mapping reads the new cluster"
  }
  assert {
    condition     = length(aws_kinesis_stream.events) == 0 && length(aws_lambda_event_source_mapping.kinesis) == 0
    error_message = "no Kinesis stream with MSK"
  }
  assert {
    condition     = alltrue([for fn in aws_lambda_function.fn : length(fn.vpc_config) == 1])
    error_message = "with RDS the functions run in the VPC"
  }
  assert {
    condition     = aws_db_instance.main[0].storage_encrypted && !aws_db_instance.main[0].publicly_accessible
    error_message = "the database is encrypted and private"
  }
  assert {
    condition     = anytrue([for p in aws_db_parameter_group.main[0].parameter : p.name == "shared_preload_libraries" && strcontains(p.value, "pg_cron")])
    error_message = "pg_cron is preloaded"
  }
  assert {
    condition     = startswith(aws_secretsmanager_secret_version.database_url.secret_string, "postgres://remarketable:") && strcontains(aws_secretsmanager_secret_version.database_url.secret_string, "sslmode=require")
    error_message = "the RDS URL is composed into the secret, with TLS required"
  }
  assert {
    condition     = alltrue([for fn in aws_lambda_function.fn : !strcontains(jsonencode(fn.environment[0].variables), aws_db_instance.main[0].password)])
    error_message = "the database password is not in any environment"
  }
}
