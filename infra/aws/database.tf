# database = rds: one RDS PostgreSQL instance (single node: no Citus on RDS) with hll and
# pg_cron; topn is not offered on RDS, so the migrations use their SQL stand-in (README: Rollups).
# database = external: only the secret below, holding var.database_url.

resource "aws_db_subnet_group" "main" {
  count      = local.rds ? 1 : 0
  name       = var.name
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_security_group" "database" {
  count       = local.rds ? 1 : 0
  name        = "${var.name}-database"
  description = "PostgreSQL from the functions and the admin group"
  vpc_id      = aws_vpc.main[0].id
}

resource "aws_vpc_security_group_ingress_rule" "database_from" {
  for_each = local.rds ? {
    functions = aws_security_group.lambda[0].id
    admin     = aws_security_group.admin[0].id
  } : {}
  security_group_id            = aws_security_group.database[0].id
  description                  = "PostgreSQL from the ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

# For `remarketable migrate` and psql: a CloudShell VPC environment (or any host) in a private
# subnet with this group reaches the database, and Secrets Manager through the endpoint.
resource "aws_security_group" "admin" {
  #checkov:skip=CKV2_AWS_5:attached by the operator to a CloudShell VPC environment, outside Terraform
  count       = local.rds ? 1 : 0
  name        = "${var.name}-admin"
  description = "Administration (migrations, psql) from inside the VPC"
  vpc_id      = aws_vpc.main[0].id
}

resource "aws_vpc_security_group_egress_rule" "admin" {
  for_each = local.rds ? {
    database  = { port = 5432, group = aws_security_group.database[0].id }
    endpoints = { port = 443, group = aws_security_group.endpoints[0].id }
  } : {}
  security_group_id            = aws_security_group.admin[0].id
  description                  = "to the ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.group
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_admin" {
  count                        = local.rds ? 1 : 0
  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the admin group"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.admin[0].id
}

resource "aws_db_parameter_group" "main" {
  count  = local.rds ? 1 : 0
  name   = "${var.name}-pg${var.rds_engine_version}"
  family = "postgres${var.rds_engine_version}"

  parameter {
    name         = "shared_preload_libraries"
    value        = "pg_cron,pg_stat_statements"
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "cron.database_name"
    value        = "remarketable"
    apply_method = "pending-reboot"
  }
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

# Generated once: later plans read a new value but the password and the secret ignore it.
data "aws_secretsmanager_random_password" "database" {
  count               = local.rds ? 1 : 0
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_db_instance" "main" {
  count                               = local.rds ? 1 : 0
  identifier                          = var.name
  engine                              = "postgres"
  engine_version                      = var.rds_engine_version
  instance_class                      = var.rds_instance_class
  allocated_storage                   = var.rds_allocated_storage_gb
  max_allocated_storage               = var.rds_allocated_storage_gb * 4
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.main.arn
  db_name                             = "remarketable"
  username                            = "remarketable"
  password                            = data.aws_secretsmanager_random_password.database[0].random_password
  parameter_group_name                = aws_db_parameter_group.main[0].name
  db_subnet_group_name                = aws_db_subnet_group.main[0].name
  vpc_security_group_ids              = [aws_security_group.database[0].id]
  publicly_accessible                 = false
  multi_az                            = var.rds_multi_az
  iam_database_authentication_enabled = true
  backup_retention_period             = 7
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  deletion_protection                 = var.rds_deletion_protection
  skip_final_snapshot                 = var.rds_skip_final_snapshot
  final_snapshot_identifier           = var.rds_skip_final_snapshot ? null : "${var.name}-final"
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.main.arn

  lifecycle {
    ignore_changes = [password]
  }
}
