//! The OpenAPI 3.0 document of `api.bank.example` as its owners publish it.
//!
//! Invariants: it lists every route benign traffic uses plus the deprecated
//! `GET /api/v0/accounts/{accountId}`, and none of the shadow routes the attack capture
//! probes (`/api/v1/internal/...`, `/api/v2/...`), so a spec-aware detector can tell them apart.

/// The spec, YAML.
pub const SPEC_YAML: &str = r##"openapi: 3.0.3
info:
  title: Bank API
  version: "1.4.0"
  description: Accounts, transfers and profiles of api.bank.example (JSON over HTTP/1.1).
servers:
  - url: http://api.bank.example
security:
  - bearer: []
paths:
  /api/v1/auth/login:
    post:
      operationId: login
      security: []
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [username, password]
              properties:
                username: { type: string }
                password: { type: string, format: password }
      responses:
        "200":
          description: Signed in.
          content:
            application/json:
              schema:
                type: object
                properties:
                  token: { type: string }
                  tokenType: { type: string }
                  expiresIn: { type: integer }
        "401": { description: Wrong username or password. }
  /api/v1/accounts:
    get:
      operationId: listAccounts
      responses:
        "200":
          description: The caller's own accounts.
          content:
            application/json:
              schema:
                type: object
                properties:
                  accounts: { type: array, items: { $ref: "#/components/schemas/Account" } }
                  count: { type: integer }
  /api/v1/accounts/{accountId}:
    get:
      operationId: getAccount
      parameters: [{ $ref: "#/components/parameters/AccountId" }]
      responses:
        "200":
          description: One account (owner only).
          content: { application/json: { schema: { $ref: "#/components/schemas/Account" } } }
        "404": { description: No such account. }
  /api/v0/accounts/{accountId}:
    get:
      operationId: getAccountV0
      deprecated: true
      description: Superseded by /api/v1/accounts/{accountId}; kept for app versions before 6.0.
      parameters: [{ $ref: "#/components/parameters/AccountId" }]
      responses:
        "200":
          description: One account.
          content: { application/json: { schema: { $ref: "#/components/schemas/Account" } } }
  /api/v1/accounts/{accountId}/transactions:
    get:
      operationId: listTransactions
      parameters:
        - { $ref: "#/components/parameters/AccountId" }
        - { name: page, in: query, schema: { type: integer, minimum: 1 } }
        - { name: limit, in: query, schema: { type: integer, minimum: 1, maximum: 100 } }
      responses:
        "200":
          description: A page of transactions.
          content:
            application/json:
              schema:
                type: object
                properties:
                  accountId: { type: integer }
                  page: { type: integer }
                  limit: { type: integer }
                  items:
                    type: array
                    items:
                      type: object
                      properties:
                        id: { type: string }
                        date: { type: string, format: date }
                        amount: { type: number }
                        currency: { type: string }
                        description: { type: string }
                        category: { type: string }
  /api/v1/transfers:
    post:
      operationId: createTransfer
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [from, to, amount, currency]
              properties:
                from: { type: integer }
                to: { type: integer }
                amount: { type: number }
                currency: { type: string, enum: [EUR, GBP, USD] }
                memo: { type: string, maxLength: 140 }
      responses:
        "201":
          description: Transfer accepted.
          content:
            application/json:
              schema:
                type: object
                properties:
                  id: { type: string }
                  status: { type: string }
                  from: { type: integer }
                  to: { type: integer }
                  amount: { type: number }
        "422": { description: Insufficient funds or invalid transfer. }
  /api/v1/users/{userId}/profile:
    parameters: [{ $ref: "#/components/parameters/UserId" }]
    get:
      operationId: getProfile
      responses:
        "200":
          description: The caller's profile.
          content: { application/json: { schema: { $ref: "#/components/schemas/Profile" } } }
    put:
      operationId: updateProfile
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                name: { type: string }
                email: { type: string, format: email }
                phone: { type: string }
      responses:
        "200":
          description: The updated profile.
          content: { application/json: { schema: { $ref: "#/components/schemas/Profile" } } }
  /api/v1/products:
    get:
      operationId: listProducts
      security: []
      parameters:
        - { name: category, in: query, schema: { type: string, enum: [cards, loans, savings, insurance, mortgages] } }
        - { name: page, in: query, schema: { type: integer, minimum: 1 } }
      responses:
        "200": { description: A page of products. }
  /api/v1/search:
    get:
      operationId: search
      parameters:
        - { name: q, in: query, required: true, schema: { type: string, maxLength: 200 } }
      responses:
        "200": { description: Help-centre results. }
  /graphql:
    post:
      operationId: graphql
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                operationName: { type: string }
                query: { type: string }
                variables: { type: object }
      responses:
        "200": { description: GraphQL result. }
  /api/v1/admin/users:
    get:
      operationId: adminListUsers
      description: Role admin only.
      parameters:
        - { name: page, in: query, schema: { type: integer, minimum: 1 } }
      responses:
        "200": { description: A page of users. }
        "403": { description: Not an admin. }
  /api/v1/admin/users/{userId}:
    delete:
      operationId: adminDeleteUser
      description: Role admin only.
      parameters: [{ $ref: "#/components/parameters/UserId" }]
      responses:
        "204": { description: Deleted. }
        "403": { description: Not an admin. }
  /api/v1/reports/export:
    get:
      operationId: exportReport
      description: Role support only.
      parameters:
        - { name: month, in: query, required: true, schema: { type: string, pattern: "^[0-9]{4}-[0-9]{2}$" } }
      responses:
        "200": { description: The month's card payments. }
  /partner/v1/inventory:
    get:
      operationId: partnerInventory
      security:
        - apiKey: []
      parameters:
        - { name: page, in: query, schema: { type: integer, minimum: 1 } }
      responses:
        "200": { description: Partner inventory. }
  /health:
    get:
      operationId: health
      security: []
      responses:
        "200": { description: Healthy. }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
    apiKey: { type: apiKey, in: header, name: X-API-Key }
  parameters:
    AccountId: { name: accountId, in: path, required: true, schema: { type: integer } }
    UserId: { name: userId, in: path, required: true, schema: { type: string, pattern: "^u-[0-9]+$" } }
  schemas:
    Account:
      type: object
      properties:
        id: { type: integer }
        owner: { type: string }
        type: { type: string }
        iban: { type: string, description: Masked. }
        currency: { type: string }
        balance: { type: number }
        available: { type: number }
        card: { type: object, properties: { brand: { type: string }, masked: { type: string } } }
        status: { type: string }
        openedAt: { type: string, format: date }
    Profile:
      type: object
      properties:
        id: { type: string }
        username: { type: string }
        name: { type: string }
        email: { type: string }
        phone: { type: string }
        address: { type: object, properties: { city: { type: string }, country: { type: string } } }
        preferences: { type: object, properties: { language: { type: string }, newsletter: { type: boolean } } }
        createdAt: { type: string, format: date-time }
"##;
