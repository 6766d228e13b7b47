# A VPC with two private subnets, for the RDS instance and the MSK cluster. No internet
# gateway: the functions that join it reach Secrets Manager and Kinesis through endpoints.

resource "aws_vpc" "main" {
  count                = local.vpc ? 1 : 0
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "aws_subnet" "private" {
  count             = local.vpc ? 2 : 0
  vpc_id            = aws_vpc.main[0].id
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  availability_zone = data.aws_availability_zones.available.names[count.index]
  tags              = { Name = "${var.name}-private-${count.index}" }
}

# The default security group allows nothing.
resource "aws_default_security_group" "main" {
  count  = local.vpc ? 1 : 0
  vpc_id = aws_vpc.main[0].id
}

resource "aws_flow_log" "main" {
  count                = local.vpc ? 1 : 0
  vpc_id               = aws_vpc.main[0].id
  traffic_type         = "REJECT"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow[0].arn
  iam_role_arn         = aws_iam_role.flow[0].arn
}

resource "aws_cloudwatch_log_group" "flow" {
  count             = local.vpc ? 1 : 0
  name              = "/vpc/${var.name}/rejected"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_iam_role" "flow" {
  count              = local.vpc ? 1 : 0
  name               = "${var.name}-vpc-flow-log"
  assume_role_policy = data.aws_iam_policy_document.assume["vpc-flow-logs.amazonaws.com"].json
}

resource "aws_iam_role_policy" "flow" {
  count  = local.vpc ? 1 : 0
  name   = "write-flow-log"
  role   = aws_iam_role.flow[0].id
  policy = data.aws_iam_policy_document.flow[0].json
}

data "aws_iam_policy_document" "flow" {
  count = local.vpc ? 1 : 0
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow[0].arn}:*"]
  }
}

resource "aws_security_group" "lambda" {
  count       = local.lambda_in ? 1 : 0
  name        = "${var.name}-lambda"
  description = "The functions: out to the database and the AWS endpoints only"
  vpc_id      = aws_vpc.main[0].id
}

resource "aws_vpc_security_group_egress_rule" "lambda_db" {
  count                        = local.lambda_in ? 1 : 0
  security_group_id            = aws_security_group.lambda[0].id
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.database[0].id
}

resource "aws_vpc_security_group_egress_rule" "lambda_endpoints" {
  count                        = local.lambda_in ? 1 : 0
  security_group_id            = aws_security_group.lambda[0].id
  description                  = "HTTPS to the interface endpoints (Secrets Manager, Kinesis)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints[0].id
}

resource "aws_security_group" "endpoints" {
  count       = local.lambda_in ? 1 : 0
  name        = "${var.name}-endpoints"
  description = "Interface endpoints: HTTPS from the functions"
  vpc_id      = aws_vpc.main[0].id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  count                        = local.lambda_in ? 1 : 0
  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the functions"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.lambda[0].id
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.lambda_in ? toset(concat(["secretsmanager"], local.kinesis ? ["kinesis-streams"] : [])) : toset([])
  vpc_id              = aws_vpc.main[0].id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
}
