# DATABASE_URL and SHARE_TOKEN_SECRET live only here; the functions get their ARNs.

resource "aws_secretsmanager_secret" "database_url" {
  name                    = "${var.name}/DATABASE_URL"
  description             = "postgres:// URL of the ReMarketable database (DATABASE_URL)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = var.secret_recovery_days
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id = aws_secretsmanager_secret.database_url.id
  secret_string = local.rds ? format(
    "postgres://%s:%s@%s:%d/%s?sslmode=require",
    aws_db_instance.main[0].username,
    data.aws_secretsmanager_random_password.database[0].random_password,
    aws_db_instance.main[0].address,
    aws_db_instance.main[0].port,
    aws_db_instance.main[0].db_name,
  ) : var.database_url

  lifecycle {
    # The generated password is fixed at creation (see database.tf). With database =
    # external, change the URL with `aws secretsmanager put-secret-value`.
    ignore_changes = [secret_string]
    precondition {
      condition     = local.rds || startswith(var.database_url, "postgres://") || startswith(var.database_url, "postgresql://")
      error_message = "database = external needs database_url (postgres://...)."
    }
  }
}

data "aws_secretsmanager_random_password" "share_token" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "share_token" {
  name                    = "${var.name}/SHARE_TOKEN_SECRET"
  description             = "Key that signs dashboard share tokens (SHARE_TOKEN_SECRET)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = var.secret_recovery_days
}

resource "aws_secretsmanager_secret_version" "share_token" {
  secret_id     = aws_secretsmanager_secret.share_token.id
  secret_string = var.share_token_secret != "" ? var.share_token_secret : data.aws_secretsmanager_random_password.share_token.random_password

  lifecycle {
    # Changing it revokes every share link: rotate with put-secret-value on purpose.
    ignore_changes = [secret_string]
  }
}
