-- Generated from control-plane/catalogue/tables.json by `smartsolar schema --backend sqlite`.
-- Do not edit: change the catalogue and regenerate (a test checks they agree).

CREATE TABLE "action_type" (
    "action_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "label" TEXT NOT NULL UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "action_type_product_type_linker" (
    "action_type_product_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "action_type_id" INTEGER NOT NULL REFERENCES "action_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "alert" (
    "alert_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "alert_type_id" INTEGER NOT NULL REFERENCES "alert_type",
    "start_time" TEXT,
    "dismissed_at" TEXT,
    "dismissed_by" TEXT,
    "dismissal_reason" TEXT,
    "repair_id" INTEGER REFERENCES "repair",
    "extra_info" TEXT,
    "customer_contact_date" TEXT,
    "customer_contact_type" TEXT CHECK ("customer_contact_type" IN ('visit', 'sms', 'phone')),
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "alert_type" (
    "alert_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "category" TEXT,
    "purpose" TEXT,
    "message" TEXT,
    "status" TEXT NOT NULL,
    "severity" TEXT,
    "analysis_frequency" TEXT NOT NULL,
    "cooling_off_period" TEXT,
    "active" BOOLEAN NOT NULL,
    "label" TEXT NOT NULL UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "alert_type_entity_anti_linker" (
    "alert_type_entity_anti_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "alert_type_id" INTEGER NOT NULL REFERENCES "alert_type",
    "entity_id" INTEGER NOT NULL REFERENCES "entity",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "alert_type_product_type_linker" (
    "alert_type_product_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "alert_type_id" INTEGER NOT NULL REFERENCES "alert_type",
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "alert_type_state_type_linker" (
    "alert_type_state_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "alert_type_id" INTEGER NOT NULL REFERENCES "alert_type",
    "state_type_id" INTEGER NOT NULL REFERENCES "state_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "analysis_history" (
    "analysis_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "alert_type_id" INTEGER NOT NULL REFERENCES "alert_type",
    "timestamp" TEXT NOT NULL,
    "status" TEXT NOT NULL CHECK ("status" IN ('success', 'failure')),
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance" (
    "appliance_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_type_id" INTEGER NOT NULL REFERENCES "appliance_type",
    "serial_number" TEXT UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_action_type" (
    "appliance_action_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_action_type_appliance_type_linker" (
    "appliance_action_type_appliance_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_type_id" INTEGER NOT NULL REFERENCES "appliance_type",
    "appliance_action_type_id" INTEGER NOT NULL REFERENCES "appliance_action_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_part_type" (
    "appliance_part_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT,
    "description" TEXT,
    "erp_code" TEXT,
    "image" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_part_type_replacement_linker" (
    "appliance_part_type_replacement_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_type_id" INTEGER NOT NULL REFERENCES "appliance_type",
    "existing_appliance_part_type_id" INTEGER NOT NULL REFERENCES "appliance_part_type",
    "max_part_count" INTEGER DEFAULT 1,
    "replacement_appliance_part_type_id" INTEGER NOT NULL REFERENCES "appliance_part_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_repair" (
    "appliance_repair_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_id" INTEGER NOT NULL REFERENCES "appliance",
    "arrival_date" TEXT,
    "refurbishment_date" TEXT,
    "pending_status" BOOLEAN,
    "process" TEXT CHECK ("process" IN ('Repair and Return', 'Replaced', 'Repossessed', 'Broken on Arrival')),
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_repair_appliance_action_type_linker" (
    "appliance_repair_appliance_action_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_repair_id" INTEGER NOT NULL REFERENCES "appliance_repair",
    "appliance_action_type_id" INTEGER NOT NULL REFERENCES "appliance_action_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_repair_appliance_part_type_linker" (
    "appliance_repair_appliance_part_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_repair_id" INTEGER NOT NULL REFERENCES "appliance_repair",
    "old_appliance_part_type_id" INTEGER NOT NULL REFERENCES "appliance_part_type",
    "new_appliance_part_type_id" INTEGER REFERENCES "appliance_part_type",
    "repaired_parts_count" INTEGER,
    "requested_date" TEXT,
    "replaced_date" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_repair_appliance_symptom_linker" (
    "appliance_repair_appliance_symptom_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_repair_id" INTEGER REFERENCES "appliance_repair",
    "appliance_symptom_id" INTEGER REFERENCES "appliance_symptom",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_symptom" (
    "appliance_symptom_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT UNIQUE,
    "description" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_symptom_appliance_type_linker" (
    "appliance_symptom_appliance_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "appliance_type_id" INTEGER REFERENCES "appliance_type",
    "appliance_symptom_id" INTEGER REFERENCES "appliance_symptom",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "appliance_type" (
    "appliance_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "category" TEXT,
    "name" TEXT UNIQUE,
    "description" TEXT,
    "erp_code" TEXT UNIQUE,
    "tracked" BOOLEAN,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "balance" (
    "balance_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "balance" INTEGER NOT NULL,
    "expected_expiry" TEXT NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "battery_test_result" (
    "battery_test_result_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "type" TEXT NOT NULL,
    "result" TEXT NOT NULL,
    "problem" TEXT,
    "message" TEXT,
    "lvd_time" TEXT,
    "energy" REAL,
    "battery_part_id" INTEGER REFERENCES "part",
    "repair_workflow_event_id" INTEGER REFERENCES "repair_workflow_event",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "channel" (
    "name" TEXT PRIMARY KEY,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "connection" (
    "connection_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT REFERENCES "product",
    "location_failed_flag" BOOLEAN NOT NULL,
    "date" TEXT NOT NULL,
    "mcc" INTEGER,
    "mnc" INTEGER,
    "cell_1_lac" INTEGER,
    "cell_1_cid" INTEGER,
    "cell_1_signal" INTEGER,
    "cell_1_mcc" INTEGER,
    "cell_1_mnc" INTEGER,
    "cell_2_lac" INTEGER,
    "cell_2_cid" INTEGER,
    "cell_2_signal" INTEGER,
    "cell_2_mcc" INTEGER,
    "cell_2_mnc" INTEGER,
    "cell_3_lac" INTEGER,
    "cell_3_cid" INTEGER,
    "cell_3_signal" INTEGER,
    "cell_3_mcc" INTEGER,
    "cell_3_mnc" INTEGER,
    "cell_4_lac" INTEGER,
    "cell_4_cid" INTEGER,
    "cell_4_signal" INTEGER,
    "cell_4_mcc" INTEGER,
    "cell_4_mnc" INTEGER,
    "cell_5_lac" INTEGER,
    "cell_5_cid" INTEGER,
    "cell_5_signal" INTEGER,
    "cell_5_mcc" INTEGER,
    "cell_5_mnc" INTEGER,
    "cell_6_lac" INTEGER,
    "cell_6_cid" INTEGER,
    "cell_6_signal" INTEGER,
    "cell_6_mcc" INTEGER,
    "cell_6_mnc" INTEGER,
    "cell_7_lac" INTEGER,
    "cell_7_cid" INTEGER,
    "cell_7_signal" INTEGER,
    "cell_7_mcc" INTEGER,
    "cell_7_mnc" INTEGER,
    "frequency" INTEGER,
    "timing_advance" INTEGER,
    "latitude" TEXT,
    "longitude" TEXT,
    "error_radius" INTEGER,
    "address" TEXT,
    "country_code" INTEGER,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "default_energy_limit" (
    "default_energy_limit_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "battery_type_id" INTEGER NOT NULL REFERENCES "part_type",
    "state_type_id" INTEGER NOT NULL REFERENCES "state_type",
    "entity_id" INTEGER REFERENCES "entity",
    "energy_limit" REAL NOT NULL,
    "max_energy_limit" REAL NOT NULL,
    "min_energy_limit" REAL NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "enable_history" (
    "enable_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "prev_enable_state" TEXT CHECK ("prev_enable_state" IN ('pending_disabled', 'pending_enabled', 'init', 'enabled', 'disabled')),
    "current_enable_state" TEXT NOT NULL CHECK ("current_enable_state" IN ('pending_disabled', 'pending_enabled', 'init', 'enabled', 'disabled')),
    "user" TEXT NOT NULL,
    "date" TEXT NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "entity" (
    "entity_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "bboxx_company_flag" BOOLEAN NOT NULL,
    "tariff" TEXT,
    "financier" BOOLEAN,
    "geic" TEXT UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "entity_facility_linker" (
    "entity_facility_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "entity_id" INTEGER NOT NULL UNIQUE REFERENCES "entity",
    "test_jig" BOOLEAN NOT NULL,
    "test_bench" BOOLEAN NOT NULL,
    "usb_diag_tool" BOOLEAN NOT NULL,
    "rework_process" BOOLEAN NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "factory_log" (
    "factory_log_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "app_name" TEXT NOT NULL,
    "product_imei" TEXT,
    "repair_id" INTEGER REFERENCES "repair",
    "timestamp" TEXT NOT NULL,
    "tags" TEXT,
    "fields" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "final_balance" (
    "final_balance_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "final_balance" INTEGER NOT NULL,
    "total_added" INTEGER NOT NULL,
    "zero_command_id" INTEGER NOT NULL REFERENCES "payment_command",
    "status" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "hub" (
    "hub_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "guid" TEXT UNIQUE,
    "entity_id" INTEGER NOT NULL REFERENCES "entity",
    "latitude" TEXT,
    "longitude" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "influx_shard_data" (
    "influx_shard_data_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "shard_data" TEXT,
    "anomalies" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "latest_software" (
    "latest_software_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "software_version_type_id" INTEGER NOT NULL REFERENCES "software_version_type",
    "date_added" TEXT NOT NULL,
    "date_removed" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "network" (
    "mccmnc" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL,
    "mcc" INTEGER,
    "mnc" INTEGER,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "parameter" (
    "parameter_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "parameter_type_id" INTEGER NOT NULL REFERENCES "parameter_type",
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "value" TEXT NOT NULL,
    "date_added" TEXT,
    "date_removed" TEXT,
    "status" TEXT CHECK ("status" IN ('active', 'removed', 'expired', 'pending')),
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "parameter_type" (
    "parameter_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "data_type" TEXT NOT NULL CHECK ("data_type" IN ('float', 'datetime', 'int', 'string', 'bool')),
    "validation_rules" TEXT,
    "description" TEXT,
    "units" TEXT,
    "repeatable" BOOLEAN NOT NULL,
    "setting" BOOLEAN NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part" (
    "part_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "serial_number" TEXT UNIQUE,
    "part_type_id" INTEGER NOT NULL REFERENCES "part_type",
    "properties" TEXT,
    "manufacturer" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part_parameter" (
    "part_parameter_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "part_id" INTEGER NOT NULL REFERENCES "part",
    "parameter_type_id" INTEGER NOT NULL REFERENCES "parameter_type",
    "value" TEXT,
    "status" TEXT CHECK ("status" IN ('active', 'removed', 'expired', 'pending')),
    "date_added" TEXT,
    "date_removed" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part_product_linker" (
    "part_product_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "part_id" INTEGER NOT NULL REFERENCES "part",
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "date_added" TEXT,
    "date_removed" TEXT,
    "added_repair_id" INTEGER REFERENCES "repair",
    "removed_repair_id" INTEGER REFERENCES "repair",
    "replaced_part_id" INTEGER REFERENCES "part",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part_type" (
    "part_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "erp_code" TEXT,
    "part_type_category_id" INTEGER NOT NULL REFERENCES "part_type_category",
    "serial_number_category" TEXT NOT NULL CHECK ("serial_number_category" IN ('known', 'hidden', 'unknown')),
    "parameter_types" TEXT,
    "part_type_metadata_validator" TEXT,
    "is_sent_by_unit" BOOLEAN,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part_type_category" (
    "part_type_category_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part_type_product_type_linker" (
    "part_type_product_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "part_type_id" INTEGER NOT NULL REFERENCES "part_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "part_type_replacement_linker" (
    "part_type_replacement_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER REFERENCES "product_type",
    "existing_part_type_id" INTEGER NOT NULL REFERENCES "part_type",
    "replacement_part_type_id" INTEGER NOT NULL REFERENCES "part_type",
    "default_part_type" BOOLEAN NOT NULL,
    "critical_part_type" BOOLEAN NOT NULL,
    "non_transferable" BOOLEAN NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "payment_command" (
    "payment_command_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "value" INTEGER NOT NULL,
    "category" TEXT NOT NULL CHECK ("category" IN ('payment', 'bad-payment', 'zero-command', 'force-reset')),
    "void" BOOLEAN NOT NULL,
    "status" TEXT,
    "transaction_id" TEXT NOT NULL UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product" (
    "product_imei" TEXT PRIMARY KEY,
    "analysis_timestamp" TEXT,
    "current_enable_flag" BOOLEAN NOT NULL,
    "desired_enable_flag" BOOLEAN NOT NULL,
    "current_tamper_flag" BOOLEAN NOT NULL DEFAULT FALSE,
    "desired_tamper_flag" BOOLEAN NOT NULL DEFAULT FALSE,
    "disable_date" TEXT,
    "device_key" TEXT UNIQUE,
    "hub_id" INTEGER REFERENCES "hub",
    "imsi" TEXT NOT NULL UNIQUE,
    "iccid" TEXT UNIQUE,
    "latest_connection_id" INTEGER,
    "latest_connection_location_id" INTEGER,
    "latest_state_id" INTEGER REFERENCES "state",
    "latest_enable_history_id" INTEGER REFERENCES "enable_history",
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "serial_number" TEXT NOT NULL UNIQUE,
    "shop_id" INTEGER REFERENCES "shop",
    "software_lock" INTEGER REFERENCES "software_version_type",
    "rtc_network_name" TEXT CHECK ("rtc_network_name" IN ('Test-SIM-Provider', 'Aeris', 'Eseye', 'Wireless-Logic')),
    "ip_address" TEXT,
    "latest_rtc_connection_history_id" INTEGER,
    "latest_rtc_mo_status_report_time" TEXT,
    "latest_rtc_mt_status_update_time" TEXT,
    "rtc_enabled_flag" BOOLEAN NOT NULL,
    "dcm_enabled_flag" BOOLEAN NOT NULL,
    "assembler" TEXT,
    "gps_lat" REAL,
    "gps_lon" REAL,
    "warranty_start_date" TEXT,
    "is_payg" BOOLEAN NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_entity_linker" (
    "product_entity_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "entity_id" INTEGER NOT NULL REFERENCES "entity",
    "date_added" TEXT,
    "date_removed" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_group" (
    "product_group_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_note" (
    "product_note_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "note_text" TEXT NOT NULL,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_parameter" (
    "product_parameter_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "parameter_type_id" INTEGER NOT NULL REFERENCES "parameter_type",
    "status" TEXT CHECK ("status" IN ('expired', 'removed', 'active', 'pending')),
    "value" TEXT NOT NULL,
    "date_added" TEXT,
    "date_removed" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_product_group_linker" (
    "product_product_group_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_group_id" INTEGER NOT NULL REFERENCES "product_group",
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "date_added" TEXT,
    "date_removed" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_software_linker" (
    "product_software_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "software_version_type_id" INTEGER NOT NULL REFERENCES "software_version_type",
    "date_added" TEXT,
    "date_removed" TEXT,
    "update_attempts" INTEGER,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_type" (
    "product_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "erp_code" TEXT,
    "parameter_types" TEXT,
    "credit_type" TEXT CHECK ("credit_type" IN ('gas', 'time')),
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "product_type_software_version_type_linker" (
    "product_type_software_version_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "software_version_type_id" INTEGER NOT NULL REFERENCES "software_version_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair" (
    "repair_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "arrival_date" TEXT,
    "refurbishment_date" TEXT,
    "measured_battery_capacity" REAL,
    "process" TEXT CHECK ("process" IN ('Repair and Return', 'Replaced', 'Repossessed', 'Broken on Arrival')),
    "pending_status" BOOLEAN,
    "workflow_name" TEXT,
    "workflow_state_id" TEXT,
    "context" TEXT,
    "latest_workflow_event_id" INTEGER,
    "outcome" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_action_type_linker" (
    "repair_action_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "action_type_id" INTEGER NOT NULL REFERENCES "action_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_centre" (
    "repair_centre_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "entity_id" INTEGER NOT NULL UNIQUE REFERENCES "entity",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_part_type_linker" (
    "repair_part_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "old_part_type_id" INTEGER REFERENCES "part_type",
    "new_part_id" INTEGER REFERENCES "part",
    "new_part_type_id" INTEGER REFERENCES "part_type",
    "requested_date" TEXT,
    "replaced_date" TEXT,
    "non_transferable" BOOLEAN NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_product_linker" (
    "repair_product_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "product_imei" TEXT NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_symptom_type_linker" (
    "repair_symptom_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "symptom_type_id" INTEGER NOT NULL REFERENCES "symptom_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_workflow_event" (
    "repair_workflow_event_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "current_state_id" TEXT NOT NULL,
    "event_id" TEXT NOT NULL,
    "payload" TEXT,
    "next_state_id" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_workflow_history" (
    "repair_workflow_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "start_state_id" TEXT,
    "end_state_id" TEXT,
    "update_commands_bin" TEXT,
    "can_undo" BOOLEAN,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_workflow_selector" (
    "repair_workflow_selector_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "workflow_name" TEXT,
    "selector_type" TEXT NOT NULL CHECK ("selector_type" IN ('USER', 'ENTITY')),
    "selector_value" TEXT NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "repair_workflow_state" (
    "repair_workflow_state_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "repair_id" INTEGER NOT NULL REFERENCES "repair",
    "state_id" TEXT,
    "entry_time" TEXT,
    "exit_time" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "rtc_connection_history" (
    "rtc_connection_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "connection_status" TEXT NOT NULL CHECK ("connection_status" IN ('online', 'offline')),
    "connection_status_time" TEXT NOT NULL,
    "connection_status_reason" TEXT NOT NULL CHECK ("connection_status_reason" IN ('user-request', 'unknown', 'low-battery-voltage', 'inactivity', 'sleep-mode', 'message-received')),
    "connection_status_info" TEXT,
    "latest_message_time" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "rtc_dead_letter" (
    "rtc_dead_letter_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "queue_name" TEXT NOT NULL,
    "payload" TEXT NOT NULL,
    "status" TEXT,
    "status_time" TEXT,
    "replay_status" TEXT,
    "replay_status_text" TEXT,
    "replay_status_time" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "rtc_fallback_message_history" (
    "rtc_fallback_message_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "message_sent_time" TEXT NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "rtc_message_history" (
    "rtc_message_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "message_reference" TEXT,
    "message_bin" TEXT,
    "message_sent_time" TEXT NOT NULL,
    "delivery_status" TEXT CHECK ("delivery_status" IN ('failed', 'delivered')),
    "delivery_status_time" TEXT,
    "delivery_status_info" TEXT,
    "message_json" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "rtc_mo_message_history" (
    "rtc_mo_message_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "message_bin" TEXT,
    "message_json" TEXT,
    "message_received_time" TEXT NOT NULL,
    "processing_status" TEXT CHECK ("processing_status" IN ('failed', 'processed')),
    "processing_status_info" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "serial" (
    "serial_number" INTEGER PRIMARY KEY AUTOINCREMENT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "shop" (
    "shop_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "guid" TEXT UNIQUE,
    "hub_id" INTEGER NOT NULL REFERENCES "hub",
    "latitude" TEXT,
    "longitude" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "sim_part_type_sim_provider_linker" (
    "sim_part_type_sim_provider_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "sim_part_type_id" INTEGER NOT NULL UNIQUE REFERENCES "part_type",
    "sim_provider_id" INTEGER NOT NULL REFERENCES "sim_provider",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "sim_provider" (
    "sim_provider_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "sim_provider_network_linker" (
    "sim_provider_network_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "sim_provider_id" INTEGER NOT NULL REFERENCES "sim_provider",
    "network_id" INTEGER NOT NULL REFERENCES "network",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "sms_history" (
    "sms_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "attempted_retries" INTEGER NOT NULL,
    "enable_history_id" INTEGER REFERENCES "enable_history",
    "message_reference" TEXT,
    "message" TEXT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "sent_time" TEXT NOT NULL,
    "sms_timeout" TEXT NOT NULL,
    "status" TEXT,
    "trigger" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "software_version_type" (
    "software_version_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "link" TEXT,
    "checksum" TEXT,
    "release_date" TEXT NOT NULL,
    "parameter_types" TEXT,
    "status" TEXT CHECK ("status" IN ('outdated', 'stable', 'beta', 'bad')),
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "state" (
    "state_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "prev_state_type" INTEGER NOT NULL REFERENCES "state_type",
    "current_state_type" INTEGER NOT NULL REFERENCES "state_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "state_type" (
    "state_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "subscriber" (
    "subscriber_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "url" TEXT NOT NULL,
    "channel_name" TEXT NOT NULL REFERENCES "channel",
    "entity_id" INTEGER REFERENCES "entity",
    "key" TEXT NOT NULL,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "symptom_type" (
    "symptom_type_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL UNIQUE,
    "description" TEXT,
    "label" TEXT NOT NULL UNIQUE,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "symptom_type_product_type_linker" (
    "symptom_type_product_type_linker_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_type_id" INTEGER NOT NULL REFERENCES "product_type",
    "symptom_type_id" INTEGER NOT NULL REFERENCES "symptom_type",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "tamper_enable_history" (
    "tamper_enable_history_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "prev_tamper_enable_state" TEXT CHECK ("prev_tamper_enable_state" IN ('pending_disabled', 'pending_enabled', 'init', 'enabled', 'disabled')),
    "current_tamper_enable_state" TEXT CHECK ("current_tamper_enable_state" IN ('pending_disabled', 'pending_enabled', 'init', 'enabled', 'disabled')),
    "user" TEXT,
    "date" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "test_jig_test_result" (
    "test_jig_test_result_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "jig_id" TEXT,
    "machine_id" TEXT,
    "product_imei" TEXT NOT NULL REFERENCES "product",
    "jig_software_version" TEXT,
    "user" TEXT NOT NULL,
    "passed" BOOLEAN NOT NULL,
    "results" TEXT,
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "user" (
    "user_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "username" TEXT NOT NULL UNIQUE,
    "password" TEXT NOT NULL,
    "permissions" TEXT NOT NULL CHECK ("permissions" IN ('OVERVIEW', 'TECHNICAL', 'ADMIN', 'FACTORY', 'SYSTEM')),
    "user_product_visibility" TEXT NOT NULL CHECK ("user_product_visibility" IN ('GLOBAL', 'ENTITY')),
    "entity_id" INTEGER REFERENCES "entity",
    "display_name" TEXT,
    "name" TEXT,
    "hub_id" INTEGER REFERENCES "hub",
    "shop_id" INTEGER REFERENCES "shop",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);
CREATE TABLE "user_repair_centre_link" (
    "user_repair_centre_link_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "username" TEXT NOT NULL UNIQUE,
    "repair_centre_id" INTEGER NOT NULL UNIQUE REFERENCES "repair_centre",
    "created_at" TEXT,
    "created_by" TEXT,
    "modified_at" TEXT,
    "modified_by" TEXT
);

CREATE INDEX "ix_action_type_product_type_linker_product_type_id" ON "action_type_product_type_linker" ("product_type_id");
CREATE INDEX "ix_action_type_product_type_linker_action_type_id" ON "action_type_product_type_linker" ("action_type_id");
CREATE INDEX "ix_alert_product_imei" ON "alert" ("product_imei");
CREATE INDEX "ix_alert_alert_type_id" ON "alert" ("alert_type_id");
CREATE INDEX "ix_alert_repair_id" ON "alert" ("repair_id");
CREATE INDEX "ix_alert_type_entity_anti_linker_alert_type_id" ON "alert_type_entity_anti_linker" ("alert_type_id");
CREATE INDEX "ix_alert_type_entity_anti_linker_entity_id" ON "alert_type_entity_anti_linker" ("entity_id");
CREATE INDEX "ix_alert_type_product_type_linker_alert_type_id" ON "alert_type_product_type_linker" ("alert_type_id");
CREATE INDEX "ix_alert_type_product_type_linker_product_type_id" ON "alert_type_product_type_linker" ("product_type_id");
CREATE INDEX "ix_alert_type_state_type_linker_alert_type_id" ON "alert_type_state_type_linker" ("alert_type_id");
CREATE INDEX "ix_alert_type_state_type_linker_state_type_id" ON "alert_type_state_type_linker" ("state_type_id");
CREATE INDEX "ix_analysis_history_product_imei" ON "analysis_history" ("product_imei");
CREATE INDEX "ix_analysis_history_alert_type_id" ON "analysis_history" ("alert_type_id");
CREATE INDEX "ix_appliance_appliance_type_id" ON "appliance" ("appliance_type_id");
CREATE INDEX "ix_appliance_action_type_appliance_type_linker_appliance_type_id" ON "appliance_action_type_appliance_type_linker" ("appliance_type_id");
CREATE INDEX "ix_appliance_action_type_appliance_type_linker_appliance_action_type_id" ON "appliance_action_type_appliance_type_linker" ("appliance_action_type_id");
CREATE INDEX "ix_appliance_part_type_replacement_linker_appliance_type_id" ON "appliance_part_type_replacement_linker" ("appliance_type_id");
CREATE INDEX "ix_appliance_part_type_replacement_linker_existing_appliance_part_type_id" ON "appliance_part_type_replacement_linker" ("existing_appliance_part_type_id");
CREATE INDEX "ix_appliance_part_type_replacement_linker_replacement_appliance_part_type_id" ON "appliance_part_type_replacement_linker" ("replacement_appliance_part_type_id");
CREATE INDEX "ix_appliance_repair_appliance_id" ON "appliance_repair" ("appliance_id");
CREATE INDEX "ix_appliance_repair_appliance_action_type_linker_appliance_repair_id" ON "appliance_repair_appliance_action_type_linker" ("appliance_repair_id");
CREATE INDEX "ix_appliance_repair_appliance_action_type_linker_appliance_action_type_id" ON "appliance_repair_appliance_action_type_linker" ("appliance_action_type_id");
CREATE INDEX "ix_appliance_repair_appliance_part_type_linker_appliance_repair_id" ON "appliance_repair_appliance_part_type_linker" ("appliance_repair_id");
CREATE INDEX "ix_appliance_repair_appliance_part_type_linker_old_appliance_part_type_id" ON "appliance_repair_appliance_part_type_linker" ("old_appliance_part_type_id");
CREATE INDEX "ix_appliance_repair_appliance_part_type_linker_new_appliance_part_type_id" ON "appliance_repair_appliance_part_type_linker" ("new_appliance_part_type_id");
CREATE INDEX "ix_appliance_repair_appliance_symptom_linker_appliance_repair_id" ON "appliance_repair_appliance_symptom_linker" ("appliance_repair_id");
CREATE INDEX "ix_appliance_repair_appliance_symptom_linker_appliance_symptom_id" ON "appliance_repair_appliance_symptom_linker" ("appliance_symptom_id");
CREATE INDEX "ix_appliance_symptom_appliance_type_linker_appliance_type_id" ON "appliance_symptom_appliance_type_linker" ("appliance_type_id");
CREATE INDEX "ix_appliance_symptom_appliance_type_linker_appliance_symptom_id" ON "appliance_symptom_appliance_type_linker" ("appliance_symptom_id");
CREATE INDEX "ix_balance_product_imei" ON "balance" ("product_imei");
CREATE INDEX "ix_battery_test_result_product_imei" ON "battery_test_result" ("product_imei");
CREATE INDEX "ix_battery_test_result_battery_part_id" ON "battery_test_result" ("battery_part_id");
CREATE INDEX "ix_battery_test_result_repair_workflow_event_id" ON "battery_test_result" ("repair_workflow_event_id");
CREATE INDEX "ix_connection_product_imei" ON "connection" ("product_imei");
CREATE INDEX "ix_default_energy_limit_battery_type_id" ON "default_energy_limit" ("battery_type_id");
CREATE INDEX "ix_default_energy_limit_state_type_id" ON "default_energy_limit" ("state_type_id");
CREATE INDEX "ix_default_energy_limit_entity_id" ON "default_energy_limit" ("entity_id");
CREATE INDEX "ix_enable_history_product_imei" ON "enable_history" ("product_imei");
CREATE INDEX "ix_factory_log_repair_id" ON "factory_log" ("repair_id");
CREATE INDEX "ix_final_balance_product_imei" ON "final_balance" ("product_imei");
CREATE INDEX "ix_final_balance_zero_command_id" ON "final_balance" ("zero_command_id");
CREATE INDEX "ix_hub_entity_id" ON "hub" ("entity_id");
CREATE INDEX "ix_latest_software_product_type_id" ON "latest_software" ("product_type_id");
CREATE INDEX "ix_latest_software_software_version_type_id" ON "latest_software" ("software_version_type_id");
CREATE INDEX "ix_parameter_parameter_type_id" ON "parameter" ("parameter_type_id");
CREATE INDEX "ix_parameter_product_imei" ON "parameter" ("product_imei");
CREATE INDEX "ix_part_part_type_id" ON "part" ("part_type_id");
CREATE INDEX "ix_part_parameter_part_id" ON "part_parameter" ("part_id");
CREATE INDEX "ix_part_parameter_parameter_type_id" ON "part_parameter" ("parameter_type_id");
CREATE INDEX "ix_part_product_linker_part_id" ON "part_product_linker" ("part_id");
CREATE INDEX "ix_part_product_linker_product_imei" ON "part_product_linker" ("product_imei");
CREATE INDEX "ix_part_product_linker_added_repair_id" ON "part_product_linker" ("added_repair_id");
CREATE INDEX "ix_part_product_linker_removed_repair_id" ON "part_product_linker" ("removed_repair_id");
CREATE INDEX "ix_part_product_linker_replaced_part_id" ON "part_product_linker" ("replaced_part_id");
CREATE INDEX "ix_part_type_part_type_category_id" ON "part_type" ("part_type_category_id");
CREATE INDEX "ix_part_type_product_type_linker_product_type_id" ON "part_type_product_type_linker" ("product_type_id");
CREATE INDEX "ix_part_type_product_type_linker_part_type_id" ON "part_type_product_type_linker" ("part_type_id");
CREATE INDEX "ix_part_type_replacement_linker_product_type_id" ON "part_type_replacement_linker" ("product_type_id");
CREATE INDEX "ix_part_type_replacement_linker_existing_part_type_id" ON "part_type_replacement_linker" ("existing_part_type_id");
CREATE INDEX "ix_part_type_replacement_linker_replacement_part_type_id" ON "part_type_replacement_linker" ("replacement_part_type_id");
CREATE INDEX "ix_payment_command_product_imei" ON "payment_command" ("product_imei");
CREATE INDEX "ix_product_hub_id" ON "product" ("hub_id");
CREATE INDEX "ix_product_latest_state_id" ON "product" ("latest_state_id");
CREATE INDEX "ix_product_latest_enable_history_id" ON "product" ("latest_enable_history_id");
CREATE INDEX "ix_product_product_type_id" ON "product" ("product_type_id");
CREATE INDEX "ix_product_shop_id" ON "product" ("shop_id");
CREATE INDEX "ix_product_software_lock" ON "product" ("software_lock");
CREATE INDEX "ix_product_entity_linker_product_imei" ON "product_entity_linker" ("product_imei");
CREATE INDEX "ix_product_entity_linker_entity_id" ON "product_entity_linker" ("entity_id");
CREATE INDEX "ix_product_note_product_imei" ON "product_note" ("product_imei");
CREATE INDEX "ix_product_parameter_product_imei" ON "product_parameter" ("product_imei");
CREATE INDEX "ix_product_parameter_parameter_type_id" ON "product_parameter" ("parameter_type_id");
CREATE INDEX "ix_product_product_group_linker_product_group_id" ON "product_product_group_linker" ("product_group_id");
CREATE INDEX "ix_product_product_group_linker_product_imei" ON "product_product_group_linker" ("product_imei");
CREATE INDEX "ix_product_software_linker_product_imei" ON "product_software_linker" ("product_imei");
CREATE INDEX "ix_product_software_linker_software_version_type_id" ON "product_software_linker" ("software_version_type_id");
CREATE INDEX "ix_product_type_software_version_type_linker_product_type_id" ON "product_type_software_version_type_linker" ("product_type_id");
CREATE INDEX "ix_product_type_software_version_type_linker_software_version_type_id" ON "product_type_software_version_type_linker" ("software_version_type_id");
CREATE INDEX "ix_repair_product_imei" ON "repair" ("product_imei");
CREATE INDEX "ix_repair_action_type_linker_repair_id" ON "repair_action_type_linker" ("repair_id");
CREATE INDEX "ix_repair_action_type_linker_action_type_id" ON "repair_action_type_linker" ("action_type_id");
CREATE INDEX "ix_repair_part_type_linker_repair_id" ON "repair_part_type_linker" ("repair_id");
CREATE INDEX "ix_repair_part_type_linker_old_part_type_id" ON "repair_part_type_linker" ("old_part_type_id");
CREATE INDEX "ix_repair_part_type_linker_new_part_id" ON "repair_part_type_linker" ("new_part_id");
CREATE INDEX "ix_repair_part_type_linker_new_part_type_id" ON "repair_part_type_linker" ("new_part_type_id");
CREATE INDEX "ix_repair_product_linker_repair_id" ON "repair_product_linker" ("repair_id");
CREATE INDEX "ix_repair_symptom_type_linker_repair_id" ON "repair_symptom_type_linker" ("repair_id");
CREATE INDEX "ix_repair_symptom_type_linker_symptom_type_id" ON "repair_symptom_type_linker" ("symptom_type_id");
CREATE INDEX "ix_repair_workflow_event_repair_id" ON "repair_workflow_event" ("repair_id");
CREATE INDEX "ix_repair_workflow_history_repair_id" ON "repair_workflow_history" ("repair_id");
CREATE INDEX "ix_repair_workflow_selector_product_type_id" ON "repair_workflow_selector" ("product_type_id");
CREATE INDEX "ix_repair_workflow_state_repair_id" ON "repair_workflow_state" ("repair_id");
CREATE INDEX "ix_rtc_connection_history_product_imei" ON "rtc_connection_history" ("product_imei");
CREATE INDEX "ix_rtc_fallback_message_history_product_imei" ON "rtc_fallback_message_history" ("product_imei");
CREATE INDEX "ix_rtc_message_history_product_imei" ON "rtc_message_history" ("product_imei");
CREATE INDEX "ix_rtc_mo_message_history_product_imei" ON "rtc_mo_message_history" ("product_imei");
CREATE INDEX "ix_shop_hub_id" ON "shop" ("hub_id");
CREATE INDEX "ix_sim_part_type_sim_provider_linker_sim_provider_id" ON "sim_part_type_sim_provider_linker" ("sim_provider_id");
CREATE INDEX "ix_sim_provider_network_linker_sim_provider_id" ON "sim_provider_network_linker" ("sim_provider_id");
CREATE INDEX "ix_sim_provider_network_linker_network_id" ON "sim_provider_network_linker" ("network_id");
CREATE INDEX "ix_sms_history_enable_history_id" ON "sms_history" ("enable_history_id");
CREATE INDEX "ix_sms_history_product_imei" ON "sms_history" ("product_imei");
CREATE INDEX "ix_state_product_imei" ON "state" ("product_imei");
CREATE INDEX "ix_state_prev_state_type" ON "state" ("prev_state_type");
CREATE INDEX "ix_state_current_state_type" ON "state" ("current_state_type");
CREATE INDEX "ix_subscriber_channel_name" ON "subscriber" ("channel_name");
CREATE INDEX "ix_subscriber_entity_id" ON "subscriber" ("entity_id");
CREATE INDEX "ix_symptom_type_product_type_linker_product_type_id" ON "symptom_type_product_type_linker" ("product_type_id");
CREATE INDEX "ix_symptom_type_product_type_linker_symptom_type_id" ON "symptom_type_product_type_linker" ("symptom_type_id");
CREATE INDEX "ix_tamper_enable_history_product_imei" ON "tamper_enable_history" ("product_imei");
CREATE INDEX "ix_test_jig_test_result_product_imei" ON "test_jig_test_result" ("product_imei");
CREATE INDEX "ix_user_entity_id" ON "user" ("entity_id");
CREATE INDEX "ix_user_hub_id" ON "user" ("hub_id");
CREATE INDEX "ix_user_shop_id" ON "user" ("shop_id");
