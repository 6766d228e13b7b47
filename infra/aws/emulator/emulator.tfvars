# The emulator run (scripts/check-infra): what moto_server supports. lambda_zip is passed on
# the command line (the zip built from the lambda crate).
region                  = "us-east-1"
stream                  = "kinesis"
database                = "rds"
function_url            = true
http_api                = true
rds_deletion_protection = false
rds_skip_final_snapshot = true
secret_recovery_days    = 0
