// Azure Database for PostgreSQL elastic cluster (Flexible Server with Citus): the coordinator
// and workers of `clusterSize` nodes, the extensions the migrations use allow-listed and
// preloaded, and firewall rules for Azure services (the function app) and an admin address.

@description('Server name (also the first label of the host name).')
param name string

param location string

@description('Nodes of the elastic cluster (coordinator included).')
@minValue(1)
param clusterSize int

@description('PostgreSQL major version.')
param version string

param skuName string
param skuTier string
param storageSizeGB int

param administratorLogin string

@secure()
param administratorPassword string

@description('Allow-list topn besides citus, hll and pg_cron. Without it the migrations install a SQL stand-in with the same functions (README: Rollups).')
param topn bool

@description('An address allowed to connect besides Azure services, e.g. the machine that runs `remarketable migrate` (empty: none).')
param adminClientIp string

@description('The database pg_cron keeps its jobs in (the one DATABASE_URL names).')
param cronDatabase string

resource cluster 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: version
    administratorLogin: administratorLogin
    administratorLoginPassword: administratorPassword
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    cluster: {
      clusterSize: clusterSize
    }
    backup: {
      backupRetentionDays: 14
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    network: {
      publicNetworkAccess: 'Enabled'
    }
    authConfig: {
      activeDirectoryAuth: 'Disabled'
      passwordAuth: 'Enabled'
    }
  }
}

// Server parameters change one at a time (parallel updates conflict), hence the chain.
resource extensions 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: cluster
  name: 'azure.extensions'
  properties: {
    value: topn ? 'citus,hll,pg_cron,pg_stat_statements,topn' : 'citus,hll,pg_cron,pg_stat_statements'
    source: 'user-override'
  }
}

resource preload 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: cluster
  name: 'shared_preload_libraries'
  properties: {
    value: 'citus,pg_cron,pg_stat_statements'
    source: 'user-override'
  }
  dependsOn: [extensions]
}

resource cronDatabaseName 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: cluster
  name: 'cron.database_name'
  properties: {
    value: cronDatabase
    source: 'user-override'
  }
  dependsOn: [preload]
}

resource requireTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: cluster
  name: 'require_secure_transport'
  properties: {
    value: 'on'
    source: 'user-override'
  }
  dependsOn: [cronDatabaseName]
}

// 0.0.0.0 to 0.0.0.0 is Azure's rule for "Azure services": the Flex Consumption app has no
// fixed outbound address without a virtual network.
resource azureServices 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: cluster
  name: 'AllowAzureServices'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource admin 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!empty(adminClientIp)) {
  parent: cluster
  name: 'Admin'
  properties: {
    startIpAddress: adminClientIp
    endIpAddress: adminClientIp
  }
}

@description('Host name of the coordinator.')
output host string = cluster.properties.fullyQualifiedDomainName
output name string = cluster.name
