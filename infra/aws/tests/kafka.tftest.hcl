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

run "kafka_needs_brokers_and_a_secret" {
  variables {
    stream = "kafka"
  }
  command         = plan
  expect_failures = [aws_lambda_event_source_mapping.kafka]
}

run "kafka_existing_cluster" {
  variables {
    stream                  = "kafka"
    kafka_bootstrap_servers = ["b-1.example.com:9096", "b-2.example.com:9096"]
    kafka_secret_arn        = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-creds"
  }
  assert {
    condition     = aws_lambda_event_source_mapping.kafka[0].self_managed_event_source[0].endpoints["KAFKA_BOOTSTRAP_SERVERS"] == "b-1.example.com:9096,b-2.example.com:9096"
    error_message = "the brokers reach the mapping"
  }
  assert {
    condition     = length(aws_lambda_event_source_mapping.kafka[0].destination_config) == 0
    error_message = "the Kafka mapping has no on-failure destination"
  }
  assert {
    condition     = aws_lambda_function.fn["ingest"].environment[0].variables["KAFKA_SOURCE_NAME"] == "kafka"
    error_message = "ingest knows the source's stable name"
  }
  assert {
    condition     = length(aws_vpc.main) == 0
    error_message = "no VPC for an existing Kafka and an external database"
  }
}
