# Values the mocked AWS provider returns where the configuration needs well-formed ARNs and
# lists (infra/aws/tests).
mock_data "aws_caller_identity" {
  defaults = { account_id = "123456789012" }
}
mock_data "aws_partition" {
  defaults = { partition = "aws" }
}
mock_data "aws_region" {
  defaults = { name = "eu-west-1" }
}
mock_data "aws_availability_zones" {
  defaults = { names = ["eu-west-1a", "eu-west-1b"] }
}
mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
mock_resource "aws_secretsmanager_secret" {
  defaults = { arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:remarketable/mocked" }
}
mock_resource "aws_kms_key" {
  defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mocked" }
}
mock_resource "aws_lambda_function_url" {
  defaults = { function_url = "https://mocked.lambda-url.eu-west-1.on.aws/" }
}
mock_resource "aws_iam_role" {
  defaults = { arn = "arn:aws:iam::123456789012:role/mocked" }
}
mock_resource "aws_kinesis_stream" {
  defaults = { arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/mocked" }
}
mock_resource "aws_lambda_function" {
  defaults = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:mocked"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:mocked/invocations"
  }
}
mock_resource "aws_cloudwatch_log_group" {
  defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mocked" }
}
mock_resource "aws_msk_serverless_cluster" {
  defaults = { arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/mocked/0000" }
}
mock_resource "aws_apigatewayv2_api" {
  defaults = { execution_arn = "arn:aws:execute-api:eu-west-1:123456789012:mocked" }
}
mock_resource "aws_iam_role_policy" {
  defaults = { id = "mocked:mocked" }
}
