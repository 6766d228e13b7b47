// ReMarketable on Azure, one environment per resource group: Event Hubs (Kafka endpoint on),
// the Functions host's storage, a Flex Consumption function app (runtime custom) with a
// user-assigned identity, Key Vault with the two secrets, an elastic cluster (PostgreSQL with
// Citus), Application Insights on Log Analytics.
//
//   az deployment group create -g <group> -f infra/azure/main.bicep \
//     -p infra/azure/main.parameters.json -p databaseAdminPassword=<password>
//
// README: "Deploying to Azure" walks through the rest (migrations, publish, first events).

targetScope = 'resourceGroup'

@description('Prefix of the resource names; a suffix unique to the resource group is added where names are global.')
@minLength(2)
@maxLength(12)
param name string = 'rmk'

param location string = resourceGroup().location

// --- Event Hubs ---------------------------------------------------------------------------

@description('Partitions of the clickstream hub (ingest runs one batch per partition at a time).')
@minValue(1)
@maxValue(32)
param partitionCount int = 8

@description('Days the hub keeps events (ingest retries a failing batch while they are kept).')
@minValue(1)
@maxValue(7)
param messageRetentionDays int = 7

@description('Consumer group of the ingest function.')
param consumerGroup string = 'ingest'

@description('Allow SAS keys on the namespace (Kafka producers that authenticate with a connection string need it; the function app uses its identity either way).')
param eventHubsLocalAuth bool = false

// --- the function app -----------------------------------------------------------------------

@description('Flex Consumption: most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Flex Consumption: memory of an instance, MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('NCRONTAB (six fields, UTC) of the rollup timer.')
param rollupSchedule string = '0 * * * * *'

@description('NCRONTAB (six fields, UTC) of the maintenance timer.')
param maintenanceSchedule string = '0 7 * * * *'

@description('The handler\'s settings (README: Settings) to change from their defaults, e.g. {"DB_POOL_SIZE": "4"}. DATABASE_URL and SHARE_TOKEN_SECRET are not here: they are Key Vault references.')
param settings object = {}

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// --- the database ---------------------------------------------------------------------------

@description('Nodes of the elastic cluster (coordinator included).')
@minValue(1)
@maxValue(20)
param clusterSize int = 2

param postgresVersion string = '16'

@description('Compute of each node.')
param databaseSku string = 'Standard_D4ds_v5'

@allowed(['GeneralPurpose', 'MemoryOptimized'])
param databaseTier string = 'GeneralPurpose'

param databaseStorageGB int = 128

param databaseAdminLogin string = 'remarketable'

@secure()
@minLength(16)
@description('Administrator password of the cluster; goes into Key Vault as part of DATABASE_URL.')
param databaseAdminPassword string

@description('Allow-list the topn extension (where the region offers it; otherwise set false and the migrations use their SQL stand-in).')
param topn bool = true

@description('An IPv4 address allowed to reach the database, for `remarketable migrate` (empty: none).')
param adminClientIp string = ''

@secure()
@description('SHARE_TOKEN_SECRET (at least 32 bytes). Default: generated on each deployment, which revokes existing share links: pass the current value from Key Vault when redeploying.')
@minLength(32)
param shareTokenSecret string = '${newGuid()}${newGuid()}'

// --------------------------------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id)
var hubName = 'clickstream'
var databaseName = 'postgres'
var deploymentContainer = 'app-package'

var roles = {
  eventHubsDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
  eventHubsDataSender: '2b629674-e913-4c01-ae53-ef4638d8f975'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-app'
  location: location
}

// --- monitoring -----------------------------------------------------------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-insights-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// --- Event Hubs -----------------------------------------------------------------------------

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: '${name}-events-${suffix}'
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: 1
  }
  properties: {
    kafkaEnabled: true
    minimumTlsVersion: '1.2'
    disableLocalAuth: !eventHubsLocalAuth
    publicNetworkAccess: 'Enabled'
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: eventHubs
  name: hubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionDays
  }
}

resource ingestGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: hub
  name: consumerGroup
}

// --- storage: the host's leases, timers and Event Hubs checkpoints, and the deployment package --

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: the name is built by take() from lower-case letters and digits; checkov cannot evaluate it
  // checkov:skip=CKV_AZURE_35: Flex Consumption without a virtual network reaches its storage over the public endpoint; every access needs an Entra identity (shared keys are off)
  // checkov:skip=CKV_AZURE_59: as CKV_AZURE_35: public endpoint, identity-only access, no anonymous blob access
  // checkov:skip=CKV_AZURE_206: zone-redundant (ZRS); the account holds only leases, checkpoints and the package, all rebuilt by a redeploy
  name: take('${name}st${suffix}', 24)
  location: location
  sku: {
    name: 'Standard_ZRS'
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

// --- the database ---------------------------------------------------------------------------

module database 'modules/database.bicep' = {
  name: 'database'
  params: {
    name: '${name}-db-${suffix}'
    location: location
    clusterSize: clusterSize
    version: postgresVersion
    skuName: databaseSku
    skuTier: databaseTier
    storageSizeGB: databaseStorageGB
    administratorLogin: databaseAdminLogin
    administratorPassword: databaseAdminPassword
    topn: topn
    adminClientIp: adminClientIp
    cronDatabase: databaseName
  }
}

// --- Key Vault: DATABASE_URL and SHARE_TOKEN_SECRET ------------------------------------------

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the app resolves its references over the public endpoint (no virtual network here); access is Entra RBAC only
  // checkov:skip=CKV_AZURE_189: as CKV_AZURE_109
  name: take('${name}-kv-${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

resource databaseUrl 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: an expiry would stop the app when it passes; rotate by writing a new version (README)
  parent: vault
  name: 'database-url'
  properties: {
    contentType: 'postgres URL (DATABASE_URL)'
    value: 'postgres://${databaseAdminLogin}:${uriComponent(databaseAdminPassword)}@${database.outputs.host}:5432/${databaseName}?sslmode=verify-full'
  }
}

resource shareToken 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: an expiry would stop the app when it passes; rotate by writing a new version (README)
  parent: vault
  name: 'share-token-secret'
  properties: {
    contentType: 'share token signing key (SHARE_TOKEN_SECRET)'
    value: shareTokenSecret
  }
}

// --- roles of the app's identity, each on the one resource it needs ---------------------------

resource receiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hub.id, identity.id, roles.eventHubsDataReceiver)
  scope: hub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataReceiver)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hub.id, identity.id, roles.eventHubsDataSender)
  scope: hub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The host keeps leases, timer state and checkpoints in blob containers it creates, and reads
// the package from the deployment container: blob data owner on this one account.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- the function app -------------------------------------------------------------------------

// The handler's settings with the README's defaults (an empty value means unset); `settings`
// overrides them. Kept in step with the README by scripts/check-infra.
var handlerDefaults = {
  DATABASE_SSLROOTCERT: ''
  DB_POOL_SIZE: '8'
  REPORT_POOL_SIZE: '4'
  REPORT_TIMEOUT_MS: '5000'
  REPORT_CONCURRENCY_PER_CREDENTIAL: '16'
  REPORT_CONCURRENCY_PER_TENANT: '32'
  DB_CONNECT_TIMEOUT_SECONDS: '5'
  EVENT_MAX_BYTES: '32768'
  DEAD_LETTER_MAX_PAYLOAD_BYTES: '65536'
  EVENT_MAX_URL_BYTES: '2048'
  EVENT_MAX_TEXT_BYTES: '256'
  EVENT_FUTURE_SKEW_SECONDS: '300'
  EVENT_RETENTION_DAYS: '30'
  COLLECT_MAX_BODY_BYTES: '1048576'
  COLLECT_MAX_EVENTS: '500'
  COLLECT_EVENTS_PER_SECOND_PER_KEY: '1000'
  COLLECT_EVENTS_PER_SECOND_PER_TENANT: '2000'
  COLLECT_EVENTS_PER_DAY_PER_KEY: '50000000'
  COLLECT_EVENTS_PER_DAY_PER_TENANT: '100000000'
  TENANT_CACHE_TTL_SECONDS: '30'
  ACCESS_CACHE_TTL_SECONDS: '10'
  REPORTS_CORS_ORIGINS: ''
  EMBED_FRAME_ANCESTORS: '\'self\''
  HSTS_MAX_AGE_SECONDS: '31536000'
  HTTP_HEADER_READ_TIMEOUT_SECONDS: '90'
  RUST_LOG: 'info'
}

// What the Functions host reads: identity-based connections (no keys anywhere), the bindings'
// %settings%, and the secrets as Key Vault references resolved with the same identity.
var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  EventHubConnection__fullyQualifiedNamespace: '${eventHubs.name}.servicebus.windows.net'
  EventHubConnection__credential: 'managedidentity'
  EventHubConnection__clientId: identity.properties.clientId
  EVENTHUB_NAME: hubName
  EVENTHUB_CONSUMER_GROUP: consumerGroup
  ROLLUP_SCHEDULE: rollupSchedule
  MAINTENANCE_SCHEDULE: maintenanceSchedule
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  DATABASE_URL: '@Microsoft.KeyVault(SecretUri=${databaseUrl.properties.secretUri})'
  SHARE_TOKEN_SECRET: '@Microsoft.KeyVault(SecretUri=${shareToken.properties.secretUri})'
}

var appSettings = union(handlerDefaults, settings, hostSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a Flex Consumption plan has no instance count to spread; zone redundancy is a separate Flex option not enabled here
  name: '${name}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the dashboard, the reports API and collect are public by design; each request carries a per-tenant credential the handler checks
  // checkov:skip=CKV_AZURE_17: browsers and trackers call the app without client certificates; authentication is the bearer credentials
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on events and requests; always-ready instances are a cost choice left out here
  // checkov:skip=CKV_AZURE_213: the Functions host itself polls the handler (GET /) and restarts it; App Service health checks do not apply to Flex Consumption
  name: '${name}-app-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      ftpsState: 'Disabled'
      appSettings: [for s in items(appSettings): { name: s.key, value: s.value }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    blobOwner
    receiver
    sender
    secretsUser
    metricsPublisher
    packageContainer
  ]
}

// --- outputs ----------------------------------------------------------------------------------

@description('The function app.')
output functionAppName string = app.name

@description('Publishes the package built by scripts/package.')
output publishCommand string = 'cd dist/app && func azure functionapp publish ${app.name} --custom'

@description('The elastic cluster\'s coordinator.')
output databaseHost string = database.outputs.host

@description('The dashboard.')
output dashboardUrl string = 'https://${app.properties.defaultHostName}/api/dashboard/'

@description('Where trackers POST events.')
output collectUrl string = 'https://${app.properties.defaultHostName}/api/collect'

@description('The vault holding database-url and share-token-secret.')
output keyVaultName string = vault.name

@description('Applies the schema from a machine allowed by adminClientIp.')
output migrateCommand string = 'DATABASE_URL="$(az keyvault secret show --vault-name ${vault.name} --name database-url --query value -o tsv)" remarketable migrate'

@description('Kafka endpoint of the namespace, for existing Kafka producers (topic: the hub).')
output kafkaBootstrapServer string = '${eventHubs.name}.servicebus.windows.net:9093'
