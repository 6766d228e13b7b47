locals {
  base_url = var.function_url ? aws_lambda_function_url.http[0].function_url : (
    var.http_api ? aws_apigatewayv2_stage.http[0].invoke_url : ""
  )
  secret_cmd = "aws secretsmanager get-secret-value --region ${local.region} --secret-id ${aws_secretsmanager_secret.database_url.arn} --query SecretString --output text"
}

output "function_names" {
  description = "The functions, by LAMBDA_ROLE."
  value       = { for role, fn in aws_lambda_function.fn : role => fn.function_name }
}

output "function_url" {
  description = "The http function's URL (empty without function_url)."
  value       = var.function_url ? aws_lambda_function_url.http[0].function_url : ""
}

output "http_api_url" {
  description = "The HTTP API's $default stage URL (empty without http_api)."
  value       = var.http_api ? aws_apigatewayv2_stage.http[0].invoke_url : ""
}

output "dashboard_url" {
  description = "The dashboard."
  value       = "${trimsuffix(local.base_url, "/")}/api/dashboard/"
}

output "collect_url" {
  description = "Where trackers POST events (Kinesis deployments; see README for Kafka)."
  value       = "${trimsuffix(local.base_url, "/")}/api/collect"
}

output "database_host" {
  description = "The RDS instance's address (empty with database = external)."
  value       = local.rds ? aws_db_instance.main[0].address : ""
}

output "database_url_secret_arn" {
  description = "Secrets Manager secret holding DATABASE_URL."
  value       = aws_secretsmanager_secret.database_url.arn
}

output "share_token_secret_arn" {
  description = "Secrets Manager secret holding SHARE_TOKEN_SECRET."
  value       = aws_secretsmanager_secret.share_token.arn
}

output "stream" {
  description = "The stream ingest reads."
  value = local.kinesis ? aws_kinesis_stream.events[0].name : (
    local.msk ? aws_msk_serverless_cluster.events[0].arn : join(",", var.kafka_bootstrap_servers)
  )
}

output "admin_security_group" {
  description = "With database = rds: the group (and the private subnets) to give a CloudShell VPC environment that runs migrations."
  value       = local.rds ? { security_group = aws_security_group.admin[0].id, subnets = aws_subnet.private[*].id } : null
}

output "migrate_command" {
  description = "Applies the schema (run once per release, before traffic; with database = rds from inside the VPC: admin_security_group)."
  value       = "DATABASE_URL=\"$(${local.secret_cmd})\" remarketable migrate"
}
